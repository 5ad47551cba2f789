package driver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// syncer runs a shard's log writes and fsyncs on a goroutine of its own,
// so a publish path never waits for the disk: it reports each completion
// to the shard as an operation (shard.Synced), and runs the shard inline
// to deliver and ack at once. It also syncs SyncInterval partitions on
// their interval.
type syncer struct {
	d       *Driver
	mu      sync.Mutex
	queue   []shard.SyncRequest
	signal  chan struct{}
	stop    chan struct{}
	done    chan struct{}
	lastRun map[*shard.Partition]intervalSync // SyncInterval partitions; guarded by mu
	// retains are retention passes of remote logs (storage.Remote) to run,
	// one per partition (a newer one replaces an older); guarded by mu.
	retains map[*shard.Partition]retainPass
	ticking atomic.Bool // the interval ticker runs, for tests
}

type retainPass struct {
	now   time.Time
	age   time.Duration
	bytes int64
}

type intervalSync struct {
	last  time.Time
	every time.Duration
}

func newSyncer(d *Driver) *syncer {
	return &syncer{d: d, signal: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		lastRun: map[*shard.Partition]intervalSync{}, retains: map[*shard.Partition]retainPass{}}
}

func (y *syncer) request(r shard.SyncRequest) {
	y.mu.Lock()
	y.queue = append(y.queue, r)
	y.mu.Unlock()
	select {
	case y.signal <- struct{}{}:
	default:
	}
}

// intervalTick is how often the syncer looks for SyncInterval partitions
// due. It ticks only while the shard has such partitions: an idle timer
// wake-up on a two-core machine lands on some message's path, and 100 of
// them a second per shard showed in the p99.
const intervalTick = 10 * time.Millisecond

func (y *syncer) run() {
	defer close(y.done)
	var tick *time.Ticker
	var ticks <-chan time.Time
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		y.mu.Lock()
		need := len(y.lastRun) > 0
		y.mu.Unlock()
		switch {
		case need && tick == nil:
			tick = time.NewTicker(intervalTick)
			ticks = tick.C
			y.ticking.Store(true)
		case !need && tick != nil:
			tick.Stop()
			tick, ticks = nil, nil
			y.ticking.Store(false)
		}
		select {
		case <-y.signal:
			y.syncRequested()
		case now := <-ticks:
			y.syncIntervals(now)
		case <-y.stop:
			y.syncRequested()
			return
		}
	}
}

func (y *syncer) syncRequested() {
	y.mu.Lock()
	reqs := y.queue
	y.queue = nil
	var retains map[*shard.Partition]retainPass
	if len(y.retains) > 0 {
		retains, y.retains = y.retains, map[*shard.Partition]retainPass{}
	}
	y.mu.Unlock()
	for p, r := range retains {
		y.runRetain(p, r)
	}
	if len(reqs) == 0 {
		return
	}
	for _, r := range reqs {
		_ = y.d.Push(y.writeAndSync(r))
	}
	y.d.RunInline(nil)
}

// writeAndSync writes r's partition's staged batches and, if r.Always,
// fsyncs them, and returns the report for the shard.
func (y *syncer) writeAndSync(r shard.SyncRequest) shard.Op {
	p := r.P
	var written, durable int64
	var werr, serr error
	if st, ok := p.Log.(storage.Staged); ok {
		written, werr = st.WritePending()
	} else {
		_, written = p.Log.Bounds()
	}
	// Durable only as far as this request synced: a request made under
	// never or interval may cover batches staged after a switch to always,
	// which must not be acked until an fsync covers them.
	if werr == nil && r.Always {
		durable, serr = y.timedSync(p.Log.Sync)
	}
	return shard.Synced(p, written, durable, werr, serr)
}

// timedSync runs sync and reports its duration to the observer.
func (y *syncer) timedSync(sync func() (int64, error)) (int64, error) {
	obs := y.d.cfg.Shard.Observer
	if obs == nil {
		return sync()
	}
	start := time.Now()
	n, err := sync()
	obs.Fsynced(time.Since(start))
	return n, err
}

// syncIntervals syncs the SyncInterval partitions whose interval passed.
func (y *syncer) syncIntervals(now time.Time) {
	y.mu.Lock()
	var due []*shard.Partition
	for p, iv := range y.lastRun {
		if now.Sub(iv.last) >= iv.every {
			due = append(due, p)
			y.lastRun[p] = intervalSync{last: now, every: iv.every}
		}
	}
	y.mu.Unlock()
	for _, p := range due {
		if _, err := y.timedSync(p.Log.Sync); err != nil {
			y.d.cfg.Logger.Error("interval fsync failed", "topic", p.Topic, "partition", p.ID, "err", err)
		}
	}
}

// retain queues a retention pass of p's log, replacing one queued before.
func (y *syncer) retain(p *shard.Partition, now time.Time, age time.Duration, bytes int64) {
	y.mu.Lock()
	y.retains[p] = retainPass{now: now, age: age, bytes: bytes}
	y.mu.Unlock()
	select {
	case y.signal <- struct{}{}:
	default:
	}
}

// runRetain applies a retention pass; retention moves only the log's
// start, which readers see through Bounds, so the shard needs no report.
func (y *syncer) runRetain(p *shard.Partition, r retainPass) {
	n, err := p.Log.Retain(r.now, r.age, r.bytes)
	switch {
	case err != nil:
		y.d.cfg.Logger.Warn("retention", "topic", p.Topic, "partition", p.ID, "err", err)
	case n > 0:
		y.d.cfg.Logger.Debug("retention removed batches", "topic", p.Topic, "partition", p.ID, "batches", n)
	}
}

// track registers a SyncInterval partition to sync every interval, or
// forgets it (interval 0).
func (y *syncer) track(p *shard.Partition, every time.Duration) {
	y.mu.Lock()
	if every > 0 {
		y.lastRun[p] = intervalSync{last: time.Now(), every: every}
	} else {
		delete(y.lastRun, p)
	}
	y.mu.Unlock()
	select { // run starts or stops its ticker
	case y.signal <- struct{}{}:
	default:
	}
}
