// Package shard is the single-threaded owner of a set of partitions.
//
// A broker runs a fixed number of shards. Each is one goroutine, locked to
// its OS thread and pinned to a CPU, that drains an inbox ring of operations
// (publish, subscribe, unsubscribe, delete) and is the only goroutine that
// ever touches the mutable state of its partitions: next offsets and
// subscriber lists. That is why the publish path takes no locks.
//
// A shard never does network I/O. It stamps offsets into batches, queues
// acks and deliveries into connection Outboxes, and at the end of each pass
// over its inbox kicks every outbox it touched once, so each connection gets
// one coalesced write per pass however many batches were fanned out to it.
//
//	event loops ──ops──▶ [inbox ring] ──▶ shard goroutine ──frames──▶ Outboxes ──kick──▶ event loops
package shard

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/ring"
	"github.com/ratatoskr-mq/ratatoskr/wire"
	"golang.org/x/sys/unix"
)

// ErrStopped is returned for operations sent to a shard that has stopped.
var ErrStopped = errors.New("shard: stopped")

// Config configures one shard. Zero fields take defaults.
type Config struct {
	ID     int // index among the broker's shards
	Shards int // how many shards the broker runs (sizes per-connection state)
	// InboxSize bounds the inbox ring. A full inbox makes event loops wait
	// (back-pressure to producers through TCP), it never grows.
	InboxSize int
	// PassSize caps the operations handled per pass before the touched
	// outboxes are flushed, bounding the latency a burst adds to a write.
	PassSize int
	// MaxAckDelay bounds how long a publish ack is held back while a
	// subscriber of its partition is under pressure (see flow.go).
	MaxAckDelay time.Duration
	// SlowConsumerTimeout disconnects a subscriber that stays under
	// pressure this long.
	SlowConsumerTimeout time.Duration
	// Pin locks the shard's thread to one CPU. Refusal is logged and ignored.
	Pin    bool
	Logger *slog.Logger
}

func (c *Config) fill() {
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 8192
	}
	if c.PassSize <= 0 {
		c.PassSize = 256
	}
	if c.MaxAckDelay <= 0 {
		c.MaxAckDelay = 250 * time.Millisecond
	}
	if c.SlowConsumerTimeout <= 0 {
		c.SlowConsumerTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Shard owns partitions and processes operations on them in inbox order.
type Shard struct {
	cfg     Config
	inbox   *ring.MPSC[op]
	stopped atomic.Bool
	done    chan struct{}

	// Owned by the shard goroutine.
	pass    uint64
	now     int64 // clock() at the start of the pass
	touched []*Outbox
	stalled []*Partition // partitions holding acks

	// Stats, readable from any goroutine.
	batches  atomic.Uint64
	messages atomic.Uint64
}

// New returns a shard that is not running yet; call Start.
func New(cfg Config) *Shard {
	cfg.fill()
	return &Shard{cfg: cfg, inbox: ring.NewMPSC[op](cfg.InboxSize), done: make(chan struct{})}
}

// ID returns the shard's index.
func (s *Shard) ID() int { return s.cfg.ID }

// Start runs the shard's loop on its own locked, pinned thread.
func (s *Shard) Start() { go s.run() }

// Stop processes what is already queued, then ends the loop and waits for it.
func (s *Shard) Stop() {
	if s.stopped.Load() {
		<-s.done
		return
	}
	_ = s.push(op{kind: opStop})
	<-s.done
}

// InboxLen reports how many operations are waiting, for metrics.
func (s *Shard) InboxLen() int { return s.inbox.Len() }

// Stats reports the batches and messages the shard has appended.
func (s *Shard) Stats() (batches, messages uint64) { return s.batches.Load(), s.messages.Load() }

var pinOnce sync.Once

func (s *Shard) run() {
	defer close(s.done)
	if s.cfg.Pin {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if cpu, err := pinThread(s.cfg.ID); err != nil {
			pinOnce.Do(func() { s.cfg.Logger.Warn("shard CPU pinning refused; running unpinned", "err", err) })
		} else {
			s.cfg.Logger.Debug("shard pinned", "shard", s.cfg.ID, "cpu", cpu)
		}
	}
	ops := make([]op, s.cfg.PassSize)
	for {
		n := s.inbox.PopBatch(ops)
		if n == 0 && len(s.stalled) == 0 {
			s.inbox.Wait(0)
			continue
		}
		if n == 0 {
			// Held acks: poll at the timer's resolution until they go.
			s.inbox.Wait(time.Millisecond)
		}
		s.pass++
		s.now = clock()
		stop := false
		for i := range ops[:n] {
			stop = s.handle(&ops[i]) || stop
			ops[i] = op{}
		}
		if len(s.stalled) > 0 {
			s.releaseHeld()
		}
		s.flushTouched()
		if stop {
			s.stopped.Store(true)
			s.drainAfterStop()
			for _, p := range s.stalled {
				s.releaseAll(p)
			}
			s.stalled = nil
			s.flushTouched()
			return
		}
	}
}

// drainAfterStop fails whatever raced into the inbox after the stop op, so
// no producer waits for an ack that will never come and no buffer leaks.
func (s *Shard) drainAfterStop() {
	ops := make([]op, s.cfg.PassSize)
	for n := s.inbox.PopBatch(ops); n > 0; n = s.inbox.PopBatch(ops) {
		s.pass++
		for i := range ops[:n] {
			s.fail(&ops[i], wire.ErrShuttingDown)
			ops[i] = op{}
		}
		s.flushTouched()
	}
}

// pinThread binds the calling thread to one of the CPUs the process may use,
// chosen by shard index.
func pinThread(id int) (int, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return -1, err
	}
	cpus := make([]int, 0, allowed.Count())
	for c := 0; c < len(allowed)*64 && len(cpus) < allowed.Count(); c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return -1, errors.New("no CPU in the affinity mask")
	}
	cpu := cpus[id%len(cpus)]
	var set unix.CPUSet
	set.Set(cpu)
	return cpu, unix.SchedSetaffinity(0, &set)
}

// push enqueues an operation, waiting while the inbox is full: that wait is
// the back-pressure that slows an event loop, and through TCP its producers.
func (s *Shard) push(o op) error {
	for spins := 0; !s.inbox.Push(o); spins++ {
		if s.stopped.Load() {
			return ErrStopped
		}
		if spins < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

// touch records that out needs a flush at the end of this pass.
func (s *Shard) touch(out *Outbox) {
	if out.passMark[s.cfg.ID] != s.pass {
		out.passMark[s.cfg.ID] = s.pass
		s.touched = append(s.touched, out)
	}
}

func (s *Shard) flushTouched() {
	for i, out := range s.touched {
		out.Kick()
		s.touched[i] = nil
	}
	s.touched = s.touched[:0]
}
