package httpgw

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// An event stream (GET /v1/topics/{topic}/stream) follows each partition
// with a subscription of its own on a dedicated session, from where the
// request's Last-Event-ID, or else its ?from=, puts it. Each event is one
// record:
//
//	id: 0:18,1:7
//	data: {"partition":0,"offset":17,"timestamp":...,"value":"..."}
//
// The id lists, for every partition whose place is known, the offset
// after the last record sent: a client that reconnects with it as
// Last-Event-ID gets every partition from where it left off, with no gap
// and no record twice. A place is known once a partition sent a record,
// and from the start for a stream from an offset or from "latest" (which
// the stream resolves to the partitions' end offsets when it opens, so a
// resume does not skip what was published while the client was away).
//
// The handlers run on the session's reader (client.DispatchInline) and
// write the response, flushing at the end of each broker batch
// (client.OnBatchEnd): a client that stops reading stops the session's
// reader, so the broker sees its session as a slow consumer, and each
// write is bounded by Config.StreamWriteTimeout; either cuts the stream,
// and nobody else waits.

// flushAt is how much a stream buffers within a broker batch before it
// writes.
const flushAt = 64 << 10

type sseStream struct {
	h     *handler
	w     http.ResponseWriter
	rc    *http.ResponseController
	enc   encoding
	parts []int   // the partitions followed, in the id's order
	next  []int64 // by index in parts: the offset after the last record sent, or -1 when unknown
	slot  []int   // by partition: its index in parts, or -1

	stopping atomic.Bool // the request is ending: write nothing more
	live     atomic.Bool // started, readable without mu

	mu      sync.Mutex // held by whoever writes to w; guards what follows
	started bool       // the response's header is written
	broken  bool       // a write failed: the client is gone or stuck
	buf     []byte     // events not yet written
	events  int        // events in buf
	cut     chan struct{}
}

// stream is GET /v1/topics/{topic}/stream.
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	err := h.runStream(w, r)
	h.g.Metrics().Request(via, err)
	if err != nil {
		h.fail(w, err)
	}
}

// runStream serves a stream; it returns an error only before the
// response started, which the caller writes.
func (h *handler) runStream(w http.ResponseWriter, r *http.Request) error {
	topic := r.PathValue("topic")
	q := r.URL.Query()
	part := -1
	var err error
	if p := q.Get("partition"); p != "" {
		if part, err = parsePartition(p); err != nil {
			return err
		}
	}
	from, err := parsePosition(q.Get("from"), client.Latest)
	if err != nil {
		return err
	}
	enc, err := outputEncoding(q.Get("encoding"))
	if err != nil {
		return err
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id") // for clients that cannot set headers
	}
	resume, err := parseEventID(last)
	if err != nil {
		return err
	}
	ctx := r.Context()
	s, err := h.g.Dedicated(ctx, via, credentials(r))
	if err != nil {
		return err
	}
	st := &sseStream{h: h, w: w, rc: http.NewResponseController(w), enc: enc, cut: make(chan struct{})}
	defer st.close(s)
	info, err := s.DescribeTopic(ctx, topic)
	if err != nil {
		return err
	}
	starts, err := st.plan(info, part, from, resume)
	if err != nil {
		return err
	}
	ended := make(chan struct{}, len(st.parts))
	for i, p := range st.parts {
		sub, err := s.Subscribe(ctx, topic, st.handle, client.FromPartition(p), client.StartAt(starts[i]),
			client.DispatchInline(), client.OnBatchEnd(st.batchEnd))
		if err != nil {
			return err
		}
		go func() { <-sub.Done(); ended <- struct{}{} }()
	}
	h.g.Metrics().Streams(via, 1)
	defer h.g.Metrics().Streams(via, -1)
	st.start()
	st.serve(r, s, ended)
	return nil
}

// plan picks the partitions to follow and where each starts.
func (st *sseStream) plan(info client.TopicInfo, part int, from client.Position, resume map[int]int64) ([]client.Position, error) {
	n := len(info.Partitions)
	if part >= n {
		return nil, &requestError{status: http.StatusNotFound, code: "not_found",
			msg: "topic " + info.Name + " has no partition " + strconv.Itoa(part)}
	}
	st.slot = slices.Repeat([]int{-1}, n)
	for p := range n {
		if part < 0 || p == part {
			st.slot[p] = len(st.parts)
			st.parts = append(st.parts, p)
		}
	}
	for p := range resume {
		if p >= n || st.slot[p] < 0 {
			return nil, badRequest("Last-Event-ID names partition " + strconv.Itoa(p) + ", which this stream does not follow")
		}
	}
	starts := make([]client.Position, len(st.parts))
	st.next = make([]int64, len(st.parts))
	for i, p := range st.parts {
		st.next[i] = -1
		switch off, ok := resume[p]; {
		case ok:
			st.next[i] = off
		case from == client.Latest:
			st.next[i] = info.Partitions[p].EndOffset
		case from.Start().Kind == wire.StartOffset:
			st.next[i] = from.Start().Value
		default:
			starts[i] = from
			continue
		}
		starts[i] = client.AtOffset(st.next[i])
	}
	return starts, nil
}

// parseEventID reads a Last-Event-ID: "partition:offset" pairs, comma
// separated; empty is none.
func parseEventID(s string) (map[int]int64, error) {
	if s == "" {
		return nil, nil
	}
	out := map[int]int64{}
	for _, pair := range strings.Split(s, ",") {
		ps, os, ok := strings.Cut(pair, ":")
		p, err1 := strconv.ParseUint(ps, 10, 30)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || o < 0 {
			return nil, badRequest("Last-Event-ID " + strconv.Quote(s) + " is not an event id of this stream (partition:offset,...)")
		}
		out[int(p)] = o
	}
	return out, nil
}

// start writes the response's header and what arrived while the
// subscriptions were being set up.
func (st *sseStream) start() {
	st.mu.Lock()
	defer st.mu.Unlock()
	hd := st.w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	st.w.WriteHeader(http.StatusOK)
	st.started = true
	st.live.Store(true)
	st.buf = append([]byte(": open\n\n"), st.buf...)
	st.writeOut()
}

// handle is the subscriptions' handler, on the session's reader.
func (st *sseStream) handle(d *client.Delivery) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.broken || int(d.Partition) >= len(st.slot) || st.slot[d.Partition] < 0 {
		return
	}
	i := st.slot[d.Partition]
	st.next[i] = d.Offset + 1
	st.buf = append(st.buf, "id: "...)
	first := true
	for j, off := range st.next {
		if off < 0 {
			continue
		}
		if !first {
			st.buf = append(st.buf, ',')
		}
		first = false
		st.buf = strconv.AppendInt(st.buf, int64(st.parts[j]), 10)
		st.buf = append(st.buf, ':')
		st.buf = strconv.AppendInt(st.buf, off, 10)
	}
	st.buf = append(st.buf, "\ndata: "...)
	st.buf = appendDelivery(st.buf, d, st.enc)
	st.buf = append(st.buf, "\n\n"...)
	st.events++
	if st.started && len(st.buf) >= flushAt {
		st.writeOut()
	}
}

// batchEnd writes what the broker's batch brought.
func (st *sseStream) batchEnd() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.started && !st.broken && len(st.buf) > 0 {
		st.writeOut()
	}
}

// writeOut writes and flushes buf, bounded by StreamWriteTimeout; a
// failed write cuts the stream. Under mu.
func (st *sseStream) writeOut() {
	if st.stopping.Load() {
		st.fail()
		return
	}
	_ = st.rc.SetWriteDeadline(time.Now().Add(st.h.cfg.StreamWriteTimeout))
	_, err := st.w.Write(st.buf)
	if err == nil {
		err = st.rc.Flush()
	}
	if err != nil {
		st.fail()
		return
	}
	st.h.g.Metrics().Delivered(via, st.events)
	st.buf, st.events = st.buf[:0], 0
}

// fail marks the stream broken and wakes serve. Under mu.
func (st *sseStream) fail() {
	if !st.broken {
		st.broken = true
		close(st.cut)
	}
	st.buf, st.events = st.buf[:0], 0
}

// serve keeps the stream open, with heartbeats, until the client goes,
// a write fails, a subscription or the session ends, or the gateway
// closes.
func (st *sseStream) serve(r *http.Request, s *gateway.Session, ended <-chan struct{}) {
	tick := time.NewTicker(st.h.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-st.h.g.Done():
			return
		case <-st.cut:
			return
		case <-s.Done():
			st.farewell(s.Err())
			return
		case <-ended:
			st.farewell(errors.Join(s.Err(), errors.New("the broker ended the subscription")))
			return
		case <-tick.C:
			st.heartbeat()
		}
	}
}

// heartbeat writes a comment, unless a write is under way (which says
// the stream is alive as well).
func (st *sseStream) heartbeat() {
	if !st.mu.TryLock() {
		return
	}
	defer st.mu.Unlock()
	if !st.broken {
		st.buf = append(st.buf, ": keepalive\n\n"...)
		st.writeOut()
	}
}

// farewell tells the client, when it still reads, why the stream ends:
// an "error" event with the error body.
func (st *sseStream) farewell(err error) {
	if !st.mu.TryLock() {
		return
	}
	defer st.mu.Unlock()
	if st.broken || err == nil {
		return
	}
	_, d := errorOf(err)
	st.buf = append(st.buf, "event: error\ndata: "...)
	st.buf = append(st.buf, `{"code":`...)
	st.buf = appendString(st.buf, d.Code)
	st.buf = append(st.buf, `,"message":`...)
	st.buf = appendString(st.buf, d.Message)
	st.buf = append(st.buf, "}\n\n"...)
	st.writeOut()
}

// close ends the session, and with it the handlers; a handler stuck in a
// write to a client that does not read is woken by moving the write
// deadline to now until the session's reader has stopped, so that
// nothing writes to w once the request returns.
func (st *sseStream) close(s *gateway.Session) {
	st.stopping.Store(true)
	if !st.live.Load() {
		// Nothing was written: no handler writes, and the error answer
		// still has to be.
		_ = s.Close()
		return
	}
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_ = st.rc.SetWriteDeadline(time.Now())
		select {
		case <-closed:
			// Nothing writes now; the server's end of the response gets
			// the usual bound.
			_ = st.rc.SetWriteDeadline(time.Now().Add(st.h.cfg.StreamWriteTimeout))
			return
		case <-tick.C:
		}
	}
}
