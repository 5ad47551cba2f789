package server

import (
	"cmp"
	"io"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Inbound memory. A frame takes memory as its bytes arrive, never by the
// length its header claims: a Publish is read into a buffer of its size
// only once half of it is here (until then its bytes wait in the
// transport's read buffer), so a header costs what was sent. Everything a
// connection has sent and the broker holds counts against one broker-wide
// bound, MaxInflightBytes (outbox.Inflight): bytes in read buffers and
// half-read frames, and each publish from the moment it is handed to its
// shard until the shard answers it (written, fsynced, acked).
//
//   - When the publishes the shards hold pass three quarters of the
//     bound, connections take no new Publish: each parks at the frame's
//     header until that falls to half the bound, as the shards answer what
//     they hold (the disk catching up). A producer is slowed, not failed:
//     its acks come later, and what it sends meanwhile waits in the read
//     buffer (gnet reads a socket whether or not its frames are taken), at
//     most its unacknowledged window. Bytes on the read side do not pause
//     anyone, so clients that trickle half frames in cannot stall the
//     producers; they are what the next rule is for.
//   - Past the bound itself, counting both sides, the connections holding
//     the most unprocessed bytes are cut (Error LIMIT_EXCEEDED, corr 0)
//     until the total is back under it: first those not paused for memory
//     (half-read frames are what an attack holds), and only then paused
//     producers, the most holding first.
//
// After a spike the memory goes back to the operating system: the guard
// returns the heap's free pages once the total has fallen well below its
// peak (debug.FreeOSMemory), instead of waiting for the runtime's slow
// background scavenger.

// memGuard resumes paused connections, cuts the biggest holders when the
// bound is passed, and hands freed memory back to the OS.
type memGuard struct {
	srv      *Server
	inflight *outbox.Inflight // publishes handed to shards, until answered
	read     atomic.Int64     // read buffers and half-read frames
	cutting  atomic.Int64     // what the connections being cut hold, until they close
	peak     atomic.Int64     // the highest total since memory was last released
	lastFree time.Time        // when release last ran; the guard's goroutine only
	pauseAt  int64
	bound    int64
	kick     chan struct{}
	quit     chan struct{}
	done     chan struct{}

	mu     sync.Mutex
	paused []*session

	cuts     atomic.Uint64 // connections cut at the bound
	pauses   atomic.Uint64 // times a connection paused for memory
	released atomic.Uint64 // FreeOSMemory calls
}

// memCheckEvery is how often the guard looks at the heap.
const memCheckEvery = 5 * time.Second

func newMemGuard(srv *Server, bound int64) *memGuard {
	g := &memGuard{srv: srv, bound: bound, pauseAt: bound / 4 * 3, kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{})}
	g.inflight = outbox.NewInflight(bound/2, g.wake)
	return g
}

func (g *memGuard) start() { go g.run() }

func (g *memGuard) stop() {
	close(g.quit)
	<-g.done
}

// wake asks the guard to look again: the total fell, or passed the bound.
func (g *memGuard) wake() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *memGuard) run() {
	defer close(g.done)
	tick := time.NewTicker(memCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-g.kick:
			g.resume()
			g.cut()
		case <-tick.C:
			g.resume() // a wake-up lost to a race costs at most a tick
			g.release()
		case <-g.quit:
			return
		}
	}
}

// total is every inbound byte the broker holds.
func (g *memGuard) total() int64 { return g.read.Load() + g.inflight.Load() }

// pause parks s until the total falls; on s's loop, at a Publish header.
func (g *memGuard) pause(s *session) {
	s.parked, s.memPaused = true, true
	s.pausedA.Store(true)
	g.pauses.Add(1)
	g.inflight.Pause()
	g.mu.Lock()
	g.paused = append(g.paused, s)
	g.mu.Unlock()
	if g.inflight.Load() <= g.bound/2 { // it fell before we were counted
		g.wake()
	}
}

// unpause ends s's pause; on s's loop.
func (g *memGuard) unpause(s *session) {
	if s.memPaused {
		s.memPaused, s.parked = false, false
		s.pausedA.Store(false)
		g.inflight.Unpause()
	}
}

// resume lets the paused connections go on once the total is low enough.
func (g *memGuard) resume() {
	if g.inflight.Load() > g.bound/2 {
		return
	}
	g.mu.Lock()
	paused := g.paused
	g.paused = nil
	g.mu.Unlock()
	for _, s := range paused {
		s.t.onLoop(func() bool {
			g.unpause(s)
			return false
		})
	}
}

// cut closes the connections holding the most unprocessed bytes until
// the total is back under the bound.
func (g *memGuard) cut() {
	over := g.total() - g.cutting.Load() - g.bound
	if over <= 0 {
		return
	}
	var holders []*session
	g.srv.sessions.Range(func(k, _ any) bool {
		if s := k.(*session); s.unprocessed.Load() > 0 && s.cutState.Load() == 0 {
			holders = append(holders, s)
		}
		return true
	})
	for _, s := range pickCuts(holders, over) {
		n := s.unprocessed.Load()
		s.cutBytes.Store(n)
		if !s.cutState.CompareAndSwap(cutNone, cutCounted) {
			continue // closed meanwhile
		}
		g.cutting.Add(n)
		g.cuts.Add(1)
		g.srv.log.Warn("connection cut: the broker's inbound memory bound is reached and it held the most unprocessed bytes",
			"remote", s.by.Remote, "bytes", n, "bound", g.bound)
		s.t.onLoop(func() bool {
			if s.closed {
				return false
			}
			s.sendErr(0, wire.Errorf(wire.CodeLimitExceeded, "the broker's inbound memory bound of "+
				strconv.FormatInt(g.bound, 10)+" bytes is reached and this connection held the most unprocessed bytes"))
			return true
		})
	}
}

// pickCuts chooses the connections to cut to take over bytes off the
// total: those not paused for memory before paused ones, and among each
// the ones holding the most unprocessed bytes first.
func pickCuts(holders []*session, over int64) []*session {
	slices.SortFunc(holders, func(a, b *session) int {
		if pa, pb := a.pausedA.Load(), b.pausedA.Load(); pa != pb {
			if pa {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.unprocessed.Load(), a.unprocessed.Load())
	})
	n := 0
	for ; n < len(holders) && over > 0; n++ {
		over -= holders[n].unprocessed.Load()
	}
	return holders[:n]
}

// A session's cutState: whether the guard counted it in cutting, and
// whether it closed. Whoever moves it from cutNone decides, so the bytes
// are taken off cutting once, exactly when they were added.
const (
	cutNone    int32 = iota
	cutCounted       // the guard is cutting it and counted its bytes
	cutClosed        // closed; its bytes (if counted) were taken off
)

// closedForCut ends the session's part in the cut accounting; on close.
func (g *memGuard) closedForCut(s *session) {
	if s.cutState.Swap(cutClosed) == cutCounted {
		g.cutting.Add(-s.cutBytes.Load())
	}
}

// release hands free heap back to the OS once the inbound total has
// fallen to an eighth of a peak of at least 64 MiB, or, at most once a
// minute, when much of the heap is free (each time is a forced collection).
func (g *memGuard) release() {
	cur, peak := g.total(), g.peak.Load()
	spike := peak >= 64<<20 && cur <= peak/8
	if !spike && (heapFree() < 256<<20 || time.Since(g.lastFree) < time.Minute) {
		return
	}
	g.lastFree = time.Now()
	// Buffers released to the pools are freed by the second collection
	// (sync.Pool's victim cache); FreeOSMemory collects and scavenges.
	debug.FreeOSMemory()
	debug.FreeOSMemory()
	g.released.Add(1)
	g.peak.Store(cur)
}

// heapFree is the heap's free memory not yet returned to the OS.
func heapFree() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// noteInbound counts what the connection's read side holds now: bytes
// the transport buffers and a half-read publish. On the loop, after each
// read.
func (s *session) noteInbound(buffered int) {
	held := int64(buffered + s.dec.holding())
	d := held - s.held
	if d == 0 {
		return
	}
	s.held = held
	s.unprocessed.Store(held)
	g := s.srv.mem
	total := g.read.Add(d) + g.inflight.Load()
	if total > g.peak.Load() {
		g.peak.Store(total) // a racy maximum is enough to see a spike
	}
	if total > g.bound {
		g.wake()
	}
}

// The inbound memory families.
var (
	mInboundRead = promtext.NewGauge("ratatoskr_inbound_read_bytes",
		"Inbound bytes on the read side: read buffers and half-read frames.")
	mInboundPublish = promtext.NewGauge("ratatoskr_inbound_publish_bytes",
		"Bytes of publishes handed to the shards and not yet answered.")
	mInboundBound = promtext.NewGauge("ratatoskr_inbound_inflight_bound_bytes",
		"The bound on inbound bytes read and not yet answered (--max-inflight-bytes).")
	mInboundPauses = promtext.NewCounter("ratatoskr_inbound_pauses_total",
		"Times a connection stopped taking publishes because the shards held three quarters of the inbound bound.")
	mInboundCuts = promtext.NewCounter("ratatoskr_inbound_cuts_total",
		"Connections cut with LIMIT_EXCEEDED because the inbound total passed its bound and they held the most.")
	mReleased = promtext.NewCounter("ratatoskr_memory_released_total",
		"Times the broker handed freed heap back to the operating system.")
)

// writeMetrics writes the inbound memory figures (docs/METRICS.md).
func (g *memGuard) writeMetrics(w io.Writer) {
	mInboundRead.WriteUint(w, uint64(max(g.read.Load(), 0)))
	mInboundPublish.WriteUint(w, uint64(max(g.inflight.Load(), 0)))
	mInboundBound.WriteUint(w, uint64(g.bound))
	mInboundPauses.WriteUint(w, g.pauses.Load())
	mInboundCuts.WriteUint(w, g.cuts.Load())
	mReleased.WriteUint(w, g.released.Load())
}
