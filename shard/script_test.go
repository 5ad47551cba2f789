package shard

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestScripts drives one shard through the scripts in testdata/, etcd
// raft's datadriven way, with a driver of its own (scriptDriver): no
// goroutine, no clock but the script's, every write and fsync done when
// the script says so. Each command prints what the shard asked for;
// `go test ./shard -rewrite` writes the answers afresh after a deliberate
// change.
//
//	new [max-ack-delay=D] [stuck-after=D] [slow-timeout=D] [max-producers=N]
//	partition name=P [log=mem|disk] [sync=never|always|interval=D]
//	outbox name=O [limit=N]            a connection's outbox (a flusher that counts)
//	subscribe out=O p=P                prints the join's answer
//	unsubscribe out=O p=P
//	publish out=O p=P corr=N [n=N]     a batch of n one-byte records
//	        [producer=N seq=N]          ... numbered by an idempotent producer
//	delete p=P
//	set-sync p=P sync=never|always|interval=D
//	wait p=P offset=N                  a long poll; prints when it is woken
//	pass at=D                          runs a pass at logical time D and prints its Ready
//	sync [fail=write|fsync]            carries out the sync requests (prints them)
//	stall out=O for=D                  its socket holds a backlog and took nothing for D
//	drain out=O [backlog=N]            its writer takes everything; the socket keeps N
//	frames out=O                       takes and prints the frames queued for O
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var w *world
		defer func() {
			if w != nil {
				w.close()
			}
		}()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "new" && w == nil {
				d.Fatalf(t, "%s before new", d.Cmd)
			}
			if d.Cmd == "new" {
				if w != nil {
					w.close()
				}
				w = newWorld(t, d)
				return ""
			}
			return w.run(t, d)
		})
	})
}

// scriptDriver queues operations for the script's next pass.
type scriptDriver struct {
	queue []Op
	now   int64
}

func (d *scriptDriver) Push(o Op) error   { d.queue = append(d.queue, o.Stamped(d.now)); return nil }
func (d *scriptDriver) TryPush(o Op) bool { _ = d.Push(o); return true }
func (d *scriptDriver) Wake()             {}
func (d *scriptDriver) RunInline(any)     {}

// flushes counts the flushes an outbox's writer was asked for.
type flushes struct{ n atomic.Int64 }

func (f *flushes) ScheduleFlush() { f.n.Add(1) }
func (f *flushes) Owner() any     { return f }
func (f *flushes) FlushNow()      { f.n.Add(1) }

// scriptEpoch is the logical time 0 of a script: fixed, so that what is
// due when (the first watch check) does not depend on how long the test
// process has run, and far past the outboxes' own clock (outbox.Clock,
// which their writers read in Done), so that a time the writer records
// is always in the script's past.
const scriptEpoch = int64(1) << 40

type world struct {
	d      *scriptDriver
	s      *Shard
	fs     *vfs.ErrorFS
	base   int64 // the logical time 0 (scriptEpoch)
	parts  map[string]*Partition
	outs   map[string]*outbox.Outbox
	names  map[*outbox.Outbox]string
	syncs  []SyncRequest
	events []string // printed by the next command: joins, wake-ups
}

func newWorld(t *testing.T, d *datadriven.TestData) *world {
	cfg := Config{ID: 0, Shards: 1}
	cfg.MaxAckDelay = optDur(t, d, "max-ack-delay", 0)
	cfg.StuckAfter = optDur(t, d, "stuck-after", 0)
	cfg.SlowConsumerTimeout = optDur(t, d, "slow-timeout", 0)
	cfg.MaxProducers = int(num(t, d, "max-producers", 0))
	w := &world{d: &scriptDriver{}, fs: vfs.NewErrors(vfs.NewMem()), base: scriptEpoch,
		parts: map[string]*Partition{}, outs: map[string]*outbox.Outbox{}, names: map[*outbox.Outbox]string{}}
	w.s = New(cfg, w.d)
	w.d.now = w.base
	return w
}

func (w *world) close() {
	for _, p := range w.parts {
		_ = p.Log.Close()
	}
	for _, o := range w.outs {
		o.Close()
	}
}

func (w *world) run(t *testing.T, d *datadriven.TestData) string {
	var b strings.Builder
	switch d.Cmd {
	case "partition":
		name := str(t, d, "name", "")
		var log storage.Log
		if str(t, d, "log", "mem") == "disk" {
			l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: w.fs, Dir: name})
			if err != nil {
				d.Fatalf(t, "open: %v", err)
			}
			log = l
		} else {
			log = storage.NewMemLog(1 << 20)
		}
		p := NewPartition(name, int32(len(w.parts)), w.s, log, policy(t, d, str(t, d, "sync", "never")))
		w.parts[name] = p
		must(t, d, p.Adopt())
	case "outbox":
		o := outbox.NewOutbox(int(num(t, d, "limit", 1<<20)), 1, &flushes{})
		name := str(t, d, "name", "")
		w.outs[name], w.names[o] = o, name
	case "subscribe":
		name := str(t, d, "out", "")
		must(t, d, w.part(t, d).Subscribe(w.out(t, d), NewJoin(1, func(err error) {
			w.events = append(w.events, fmt.Sprintf("joined %s: %v", name, err))
		})))
	case "unsubscribe":
		must(t, d, w.part(t, d).Unsubscribe(w.out(t, d), nil))
	case "publish":
		p := w.part(t, d)
		buf, off := deliverBuf(p.Topic, int(num(t, d, "n", 1)), num(t, d, "producer", wire.NoProducer),
			int32(num(t, d, "seq", wire.NoProducer)))
		must(t, d, p.Publish(w.out(t, d), uint32(num(t, d, "corr", 0)), buf, off))
	case "delete":
		p := w.part(t, d)
		must(t, d, p.Delete(func() { w.events = append(w.events, "deleted "+p.Topic) }))
	case "set-sync":
		must(t, d, w.part(t, d).SetSync(policy(t, d, str(t, d, "sync", ""))))
	case "wait":
		p := w.part(t, d)
		wt := &Waiter{Waker: wakeFn(func(end int64, ok bool) {
			w.events = append(w.events, fmt.Sprintf("woken %s: end %d ok %v", p.Topic, end, ok))
		})}
		must(t, d, p.Wait(wt, num(t, d, "offset", 0)))
	case "pass":
		w.pass(t, d, &b)
	case "sync":
		w.sync(t, d, &b)
	case "stall":
		o := w.out(t, d)
		pend, _ := o.Take()
		o.Done(pend, 100)
		o.Backdate(optDur(t, d, "for", 0))
	case "drain":
		o := w.out(t, d)
		pend, _ := o.Take()
		o.Done(pend, int(num(t, d, "backlog", 0)))
	case "frames":
		w.frames(t, d, &b)
	default:
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	for _, e := range w.events {
		b.WriteString(e + "\n")
	}
	w.events = w.events[:0]
	return b.String()
}

// pass runs one pass at the logical time given and prints its Ready, as a
// driver would carry it out: answers encoded into their outboxes.
func (w *world) pass(t *testing.T, d *datadriven.TestData, b *strings.Builder) {
	now := w.base + int64(optDur(t, d, "at", 0))
	if now < w.d.now {
		d.Fatalf(t, "time goes backwards")
	}
	w.d.now = now
	ops := w.d.queue
	w.d.queue = nil
	w.s.Tick(now)
	for i := range ops {
		w.s.Step(&ops[i])
	}
	rd := w.s.Ready()
	for _, e := range w.events { // joins and wake-ups happened in the Steps
		b.WriteString(e + "\n")
	}
	w.events = w.events[:0]
	for _, a := range rd.Answers {
		if a.Err != nil {
			fmt.Fprintf(b, "error %s corr=%d %s\n", w.names[a.Out], a.Corr, a.Err.Code)
		} else {
			fmt.Fprintf(b, "ack %s corr=%d base=%d count=%d\n", w.names[a.Out], a.Corr, a.Ack.BaseOffset, a.Ack.Count)
		}
		var buf [wire.PublishAckSize]byte
		a.Out.SendCopy(wire.AppendPublishAck(buf[:0], a.Corr, a.Ack))
	}
	if len(rd.Touched) > 0 {
		b.WriteString("touched " + w.list(rd.Touched) + "\n")
	}
	if len(rd.Refresh) > 0 {
		b.WriteString("refresh " + w.list(rd.Refresh) + "\n")
	}
	for _, r := range rd.Syncs {
		fmt.Fprintf(b, "sync-request %s always=%v\n", r.P.Topic, r.Always)
		w.syncs = append(w.syncs, r)
	}
	for _, r := range rd.Intervals {
		fmt.Fprintf(b, "interval %s every=%s\n", r.P.Topic, r.Every)
	}
	if rd.HeldForPressure {
		b.WriteString("held-for-pressure\n")
	}
	if rd.WatchEvery > 0 {
		fmt.Fprintf(b, "watch-every %s\n", rd.WatchEvery)
	}
	w.s.Advance()
	if b.Len() == 0 {
		b.WriteString("nothing\n")
	}
}

// sync carries out the sync requests as the driver's syncer would, and
// queues their reports for the next pass.
func (w *world) sync(t *testing.T, d *datadriven.TestData, b *strings.Builder) {
	fail := str(t, d, "fail", "")
	for _, r := range w.syncs {
		var written, durable int64
		var werr, serr error
		st := r.P.Log.(storage.Staged)
		var rule *vfs.Rule
		if fail == "write" {
			rule = w.fs.InjectWrite(nil, fmt.Errorf("injected write error"), 0)
		}
		written, werr = st.WritePending()
		if werr == nil && r.Always {
			if fail == "fsync" {
				rule = w.fs.InjectSync(nil, fmt.Errorf("injected fsync error"), 0)
			}
			durable, serr = r.P.Log.Sync()
		}
		if rule != nil {
			w.fs.Clear()
		}
		fmt.Fprintf(b, "synced %s written=%d durable=%d werr=%v serr=%v\n", r.P.Topic, written, durable, werr != nil, serr != nil)
		_ = w.d.Push(Synced(r.P, written, durable, werr, serr))
	}
	w.syncs = nil
}

func (w *world) frames(t *testing.T, d *datadriven.TestData, b *strings.Builder) {
	o := w.out(t, d)
	pend, slow := o.Take()
	var all []byte
	for _, v := range pend.IOV {
		all = append(all, v...)
	}
	o.Done(pend, 0)
	if slow {
		b.WriteString("slow " + o.SlowReason().String() + "\n")
	}
	for len(all) > 0 {
		f, n, err := wire.ReadFrame(all, 1<<30)
		if err != nil || n == 0 {
			d.Fatalf(t, "bad frame: %v", err)
		}
		all = all[n:]
		switch f.Type {
		case wire.TypeDeliver:
			v, err := wire.DecodeBatchView(f.Body)
			if err != nil {
				d.Fatalf(t, "deliver: %v", err)
			}
			fmt.Fprintf(b, "deliver %s base=%d count=%d\n", v.Topic, v.Batch.BaseOffset(), v.Batch.Count())
		case wire.TypePublishAck:
			a, err := wire.DecodePublishAck(f.Body)
			if err != nil {
				d.Fatalf(t, "ack: %v", err)
			}
			fmt.Fprintf(b, "ack corr=%d base=%d count=%d\n", f.Corr, a.BaseOffset, a.Count)
		default:
			fmt.Fprintf(b, "%v corr=%d\n", f.Type, f.Corr)
		}
	}
	if b.Len() == 0 {
		b.WriteString("none\n")
	}
}

func (w *world) list(outs []*outbox.Outbox) string {
	names := make([]string, len(outs))
	for i, o := range outs {
		names[i] = w.names[o]
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

func (w *world) part(t *testing.T, d *datadriven.TestData) *Partition {
	p, ok := w.parts[str(t, d, "p", "")]
	if !ok {
		d.Fatalf(t, "no such partition")
	}
	return p
}

func (w *world) out(t *testing.T, d *datadriven.TestData) *outbox.Outbox {
	o, ok := w.outs[str(t, d, "out", "")]
	if !ok {
		d.Fatalf(t, "no such outbox")
	}
	return o
}

type wakeFn func(end int64, ok bool)

func (f wakeFn) Woken(end int64, ok bool) { f(end, ok) }

func policy(t *testing.T, d *datadriven.TestData, s string) SyncPolicy {
	switch {
	case s == "always":
		return SyncPolicy{Mode: SyncAlways}
	case s == "never":
		return SyncPolicy{Mode: SyncNever}
	case strings.HasPrefix(s, "interval="):
		iv, err := time.ParseDuration(strings.TrimPrefix(s, "interval="))
		if err != nil {
			d.Fatalf(t, "interval: %v", err)
		}
		return SyncPolicy{Mode: SyncInterval, Interval: iv}
	}
	d.Fatalf(t, "bad sync policy %q", s)
	return SyncPolicy{}
}

func must(t *testing.T, d *datadriven.TestData, err error) {
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
}

func str(t *testing.T, d *datadriven.TestData, key, def string) string {
	if !d.HasArg(key) {
		return def
	}
	var v string
	d.ScanArgs(t, key, &v)
	return v
}

func num(t *testing.T, d *datadriven.TestData, key string, def int64) int64 {
	if !d.HasArg(key) {
		return def
	}
	var v int64
	d.ScanArgs(t, key, &v)
	return v
}

func optDur(t *testing.T, d *datadriven.TestData, key string, def time.Duration) time.Duration {
	if !d.HasArg(key) {
		return def
	}
	v, err := time.ParseDuration(str(t, d, key, ""))
	if err != nil {
		d.Fatalf(t, "%s: %v", key, err)
	}
	return v
}

// deliverBuf builds a Deliver frame of n records, as the engine would hand
// it to a shard, and returns it with the batch offset. producer and seq
// number the batch (wire.NoProducer: not idempotent).
func deliverBuf(topic string, n int, producer int64, seq int32) (*storage.Buf, int) {
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, topic, 0)
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, producer, seq)
	for i := range n {
		bb.Append(int64(i), nil, []byte("v"), nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	b := storage.NewBuf(len(frame))
	copy(b.B, frame)
	return b, off
}
