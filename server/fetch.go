package server

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Pull fetches (docs/DESIGN.md, "Storage and durability", on reads).
//
// A Fetch is a fetchReq, a record of a few words, from its frame to its
// answer. Reads run on a fixed set of reader goroutines fed by a queue of
// these records. A fetch that finds nothing and may wait registers its
// record with the partition (shard.Waiter) and arms a timer
// (time.AfterFunc), so it holds no goroutine while it waits. Whatever ends
// the wait first (data becoming visible, on the shard; the timer; the
// connection closing, on its event loop) only queues the record again; a
// reader then withdraws the wait if the partition may still hold it, reads
// once more and answers.
//
// Bounds: a connection has at most MaxFetchesPerConn fetches outstanding
// (one more is answered LIMIT_EXCEEDED and the connection stays), and a
// wait lasts at most MaxFetchWait. So the records, and the queue that
// holds each of them at most once, are bounded by the connections times
// MaxFetchesPerConn, and nothing of a connection outlives it: closing it
// ends its waits, which withdraws them from their partitions and stops
// their timers.
//
// A fetch's state; the first ending wins, and a reader handles it:
//
//	reading ──nothing to read, may wait──▶ registering ──▶ waiting
//	                                            │              │
//	                                            ▼              ▼
//	                      woken, deleted, timed out or cancelled (by the
//	                      shard, the timer or the connection closing)
const (
	fetchReading     int32 = iota // queued for a reader, or being read
	fetchRegistering              // its reader is registering the wait
	fetchWaiting                  // registered; an ending queues it again
	fetchWoken                    // data became visible: read again
	fetchDeleted                  // the partition was deleted
	fetchTimedOut                 // the wait passed: withdraw it, read again
	fetchCancelled                // the connection closed: withdraw it, no answer
)

// readersPerCPU sizes the reader pool. A read may wait for the disk, so
// there are more readers than CPUs; a fixed number, so that a flood of
// fetches queues up instead of starting a goroutine each.
const readersPerCPU = 4

var errFetchDeleted = wire.Errorf(wire.CodeUnknownTopic, "topic was deleted while the fetch waited")

// fetcher runs the broker's fetches: the reader pool and its queue, and
// the counts the metrics show.
type fetcher struct {
	q       fetchQueue
	once    sync.Once // starts the readers at the first fetch
	readers sync.WaitGroup
	waiting atomic.Int64  // fetches registered with a partition
	refused atomic.Uint64 // fetches refused for the per-connection bound
}

// submit queues a fetch for a reader.
func (f *fetcher) submit(r *fetchReq) {
	f.once.Do(func() {
		f.q.cond.L = &f.q.mu
		for range max(8, readersPerCPU*runtime.GOMAXPROCS(0)) {
			f.readers.Go(f.read)
		}
	})
	f.q.push(r)
}

func (f *fetcher) read() {
	for r := f.q.pop(); r != nil; r = f.q.pop() {
		r.serve()
	}
}

// stop lets the readers finish what is queued and waits for them. Fetches
// queued later (a timer firing after shutdown) are dropped.
func (f *fetcher) stop() {
	f.q.stop()
	f.readers.Wait()
}

// fetchQueue is the readers' queue: an intrusive list, so that queueing
// allocates nothing and never waits beyond a short mutex, which is what
// the shard needs when it wakes many waiters in one pass. It is bounded by
// construction: a record is in it at most once (only a change of state
// queues it, and a reader takes it out before the next), and the records
// are bounded by the connections times MaxFetchesPerConn.
type fetchQueue struct {
	mu         sync.Mutex
	cond       sync.Cond // on mu, from the first submit
	head, tail *fetchReq
	stopped    bool
}

func (q *fetchQueue) push(r *fetchReq) {
	q.mu.Lock()
	if q.stopped {
		q.mu.Unlock()
		return
	}
	if q.tail == nil {
		q.head = r
	} else {
		q.tail.next = r
	}
	q.tail = r
	q.mu.Unlock()
	q.cond.Signal()
}

// pop takes the oldest record, waiting for one; nil once stopped and empty.
func (q *fetchQueue) pop() *fetchReq {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == nil {
		if q.stopped {
			return nil
		}
		q.cond.Wait()
	}
	r := q.head
	q.head, r.next = r.next, nil
	if q.head == nil {
		q.tail = nil
	}
	return r
}

func (q *fetchQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// connFetches is one connection's outstanding fetches: what the
// per-connection bound counts, and what closing the connection ends.
type connFetches struct {
	mu     sync.Mutex
	live   []*fetchReq // guarded by mu; each knows its index
	closed atomic.Bool
}

func (c *connFetches) add(r *fetchReq, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.live) >= limit {
		return false
	}
	r.slot = len(c.live)
	c.live = append(c.live, r)
	return true
}

func (c *connFetches) remove(r *fetchReq) {
	c.mu.Lock()
	last := len(c.live) - 1
	c.live[r.slot] = c.live[last]
	c.live[r.slot].slot = r.slot
	c.live[last] = nil
	c.live = c.live[:last]
	c.mu.Unlock()
}

// close ends the waits of a connection that closed. A fetch being read
// sees closed before it would start waiting.
func (c *connFetches) close() {
	c.closed.Store(true)
	c.mu.Lock()
	for _, r := range c.live {
		r.end(fetchCancelled)
	}
	c.mu.Unlock()
}

// fetchReq is one Fetch, from its frame to its answer.
type fetchReq struct {
	srv      *Server
	conn     *connFetches
	out      *outbox.Outbox
	p        *shard.Partition
	start    wire.Start
	corr     uint32
	maxBytes int
	wait     time.Duration
	offset   int64 // the resolved start, once read
	state    atomic.Int32
	w        shard.Waiter
	timer    *time.Timer // armed while registering or waiting
	next     *fetchReq   // in the queue; guarded by its mutex
	slot     int         // index in conn.live; guarded by conn.mu
}

// startFetch queues a Fetch for the reader pool, unless the connection
// already has its maximum outstanding.
func (srv *Server) startFetch(conn *connFetches, out *outbox.Outbox, corr uint32, p *shard.Partition, req wire.Fetch) error {
	r := &fetchReq{srv: srv, conn: conn, out: out, p: p, start: req.Start, corr: corr,
		maxBytes: max(1, min(int(req.MaxBytes), srv.cfg.MaxFrameBytes-FrameOverhead-wire.FetchResultHeaderSize)),
		wait:     min(time.Duration(req.MaxWaitMs)*time.Millisecond, srv.cfg.MaxFetchWait)}
	r.w.Waker = r
	if !conn.add(r, srv.cfg.MaxFetchesPerConn) {
		srv.fetches.refused.Add(1)
		return wire.Errorf(wire.CodeLimitExceeded, "this connection has "+strconv.Itoa(srv.cfg.MaxFetchesPerConn)+
			" fetches outstanding, the most the broker allows (max-fetches-per-connection)")
	}
	srv.fetches.submit(r)
	return nil
}

// serve is a reader's turn with the fetch: its first read, or the end of
// its wait.
func (r *fetchReq) serve() {
	if r.state.Load() == fetchReading {
		r.first()
		return
	}
	r.ended()
}

// earliestRetries bounds how often a fetch from the earliest offset looks
// for it again when retention moved it under the read; each retry follows
// a whole segment's deletion, so more than a few means something else.
const earliestRetries = 4

// readFrom resolves a fetch's start and reads from there, returning the
// offset it read from. A fetch from the earliest offset whose start
// retention removed between finding it and reading it looks again,
// instead of answering OFFSET_OUT_OF_RANGE for an offset the client never
// named.
func (srv *Server) readFrom(p *shard.Partition, st wire.Start, maxBytes int) (int64, []byte, error) {
	offset, err := resolveStart(p, st)
	for try := 1; err == nil; try++ {
		frame, rerr := srv.readFetch(p, offset, maxBytes)
		if st.Kind != wire.StartEarliest || !errors.Is(rerr, wire.ErrOffsetOutOfRange) || try == earliestRetries {
			return offset, frame, rerr
		}
		offset, err = resolveStart(p, st)
	}
	return offset, nil, err
}

// first resolves the start and reads; a fetch that finds nothing and may
// wait starts waiting instead of answering.
func (r *fetchReq) first() {
	if r.conn.closed.Load() {
		r.conn.remove(r)
		return
	}
	offset, frame, err := r.srv.readFrom(r.p, r.start, r.maxBytes)
	r.offset = offset
	if err == nil && r.wait > 0 && len(frame) == wire.HeaderSize+wire.FetchResultHeaderSize {
		r.startWait()
		return
	}
	r.answer(frame, err)
}

// startWait registers the fetch with its partition and arms its timer.
// An ending that comes while it registers is left for it to handle.
func (r *fetchReq) startWait() {
	r.state.Store(fetchRegistering)
	r.srv.fetches.waiting.Add(1)
	r.timer = time.AfterFunc(r.wait, r.timedOut)
	switch {
	case r.conn.closed.Load():
		r.end(fetchCancelled)
	case r.p.Wait(&r.w, r.offset) != nil:
		r.end(fetchTimedOut) // the broker is stopping: answer with what there is
	default:
		r.p.Shard.Wake()
	}
	if !r.state.CompareAndSwap(fetchRegistering, fetchWaiting) {
		r.ended()
	}
}

// Woken implements shard.Waker. It runs on the shard: it only queues.
func (r *fetchReq) Woken(_ int64, ok bool) {
	if ok {
		r.end(fetchWoken)
	} else {
		r.end(fetchDeleted)
	}
}

func (r *fetchReq) timedOut() { r.end(fetchTimedOut) }

// end records how the wait ended, unless it has already ended. A waiting
// fetch is queued for a reader; a registering one is handled by its
// reader once it has registered.
func (r *fetchReq) end(how int32) {
	for {
		st := r.state.Load()
		if st != fetchRegistering && st != fetchWaiting {
			return
		}
		if r.state.CompareAndSwap(st, how) {
			if st == fetchWaiting {
				r.srv.fetches.q.push(r)
			}
			return
		}
	}
}

// ended finishes a wait that is over: it stops the timer, withdraws the
// wait when the partition may still hold it (a wake-up or a delete has
// removed it already), and answers as the ending says.
func (r *fetchReq) ended() {
	r.timer.Stop()
	r.srv.fetches.waiting.Add(-1)
	how := r.state.Load()
	if how == fetchTimedOut || how == fetchCancelled {
		if r.p.Unwait(&r.w) == nil {
			r.p.Shard.Wake()
		}
	}
	switch how {
	case fetchCancelled:
		r.conn.remove(r)
	case fetchDeleted:
		r.answer(nil, errFetchDeleted)
	default:
		r.answer(r.srv.readFetch(r.p, r.offset, r.maxBytes))
	}
}

// answer sends the FetchResult frame (readFetch left room for its header)
// or the error. The fetch stops counting against its connection's bound
// first, so a client that fetches again as soon as it has the answer is
// not refused for the fetch it just got.
func (r *fetchReq) answer(frame []byte, err error) {
	r.conn.remove(r)
	if err != nil {
		r.srv.replyLater(r.out, r.corr, err)
		return
	}
	wire.AppendHeader(frame[:0], wire.TypeFetchResult, 0, r.corr, len(frame)-wire.HeaderSize)
	r.out.SendCopy(frame)
	r.out.Kick()
}
