package httpgw

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
)

// HeaderPrefix starts the request headers that become a raw body's
// message headers: Ratatoskr-Header-Trace-Id: x is the header trace-id
// (names are lower-cased, as HTTP/2 sends them).
const HeaderPrefix = "Ratatoskr-Header-"

// ackMode is how a publish answer lists where records went.
type ackMode uint8

const (
	acksRecords ackMode = iota // one {"partition","offset"} per record
	acksRanges                 // runs of consecutive offsets of one partition
	acksNone                   // the count only
)

func parseAcks(s string) (ackMode, error) {
	switch s {
	case "", "records":
		return acksRecords, nil
	case "ranges":
		return acksRanges, nil
	case "none":
		return acksNone, nil
	}
	return 0, badRequest(`unknown acks "` + s + `": use "records", "ranges" or "none"`)
}

// publish is POST /v1/topics/{topic}/messages; the content type chooses
// the body's form (docs/HTTP.md).
func (h *handler) publish(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	q := r.URL.Query()
	var def int32
	mode, err := parseAcks(q.Get("acks"))
	if err != nil {
		h.g.Metrics().Request(via, err)
		h.fail(w, err)
		return
	}
	enc, err := parseEncoding(q.Get("encoding"), encUTF8)
	if err == nil {
		def, err = queryPartition(q.Get("partition"))
	}
	if err != nil {
		h.g.Metrics().Request(via, err)
		h.fail(w, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	res := &published{mode: mode, partition: def}
	s, release, err := h.g.Acquire(r.Context(), via, credentials(r))
	if err == nil {
		switch ct {
		case "application/json":
			err = h.publishJSON(r, s, topic, enc, res)
		case "application/x-ndjson", "application/jsonl", "application/jsonlines":
			err = h.publishNDJSON(r, s, topic, enc, res)
		default:
			err = h.publishRaw(r, s, topic, res)
		}
		release()
	}
	h.g.Metrics().Request(via, err)
	h.g.Metrics().Published(via, res.count)
	switch {
	case err == nil:
		writeRaw(w, http.StatusOK, res.appendBody(nil, nil))
	case res.count > 0:
		// Some records were stored before the failure: the answer says
		// which, beside the error.
		status, d := errorOf(err)
		writeRaw(w, status, res.appendBody(nil, &d))
	default:
		h.fail(w, err)
	}
}

// publishJSON publishes a JSON body, decoded and checked whole first:
// a bad record publishes nothing.
func (h *handler) publishJSON(r *http.Request, s *gateway.Session, topic string, enc encoding, res *published) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	var c chunk
	if err := decodeJSON(body, enc, h.cfg.MaxMessageBytes, &c); err != nil {
		return err
	}
	n := h.cfg.ChunkRecords
	for i := 0; i < len(c.msgs); i += n {
		j := min(i+n, len(c.msgs))
		sub := chunk{msgs: c.msgs[i:j], parts: c.parts[i:j]}
		if err := publishChunk(r.Context(), s, topic, &sub, res); err != nil {
			return err
		}
	}
	return nil
}

// publishNDJSON publishes an NDJSON body a chunk at a time, reading and
// checking the next chunk while the broker stores the one before: a bad
// line publishes nothing of its chunk, and the chunks before it stay
// published.
func (h *handler) publishNDJSON(r *http.Request, s *gateway.Session, topic string, enc encoding, res *published) error {
	rd := newNDJSONReader(r.Body, enc, h.cfg.MaxMessageBytes)
	chunks := [2]*chunk{chunkPool.Get().(*chunk), chunkPool.Get().(*chunk)}
	// Every return below comes after wait: no publish still uses them.
	defer chunkPool.Put(chunks[1])
	defer chunkPool.Put(chunks[0])
	var inflight chan error
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	for i := 0; ; i++ {
		c := chunks[i%2]
		rerr := rd.next(c, h.cfg.ChunkRecords)
		if err := wait(); err != nil {
			return err
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		done := make(chan error, 1)
		inflight = done
		go func() { done <- publishChunk(r.Context(), s, topic, c, res) }()
	}
}

// publishRaw publishes the body as one message's value (docs/HTTP.md).
func (h *handler) publishRaw(r *http.Request, s *gateway.Session, topic string, res *published) error {
	q := r.URL.Query()
	m := client.Message{}
	if q.Has("key") {
		m.Key = []byte(q.Get("key"))
	}
	for name, vals := range r.Header {
		if k, ok := strings.CutPrefix(name, HeaderPrefix); ok && k != "" {
			for _, v := range vals {
				m.Headers = append(m.Headers, client.Header{Key: strings.ToLower(k), Value: []byte(v)})
			}
		}
	}
	limit := int64(h.cfg.MaxMessageBytes)
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return err
	}
	m.Value = body
	if int64(len(body)) > limit {
		return tooLarge("the message is more than the broker's limit of " + strconv.FormatInt(limit, 10) + " bytes")
	}
	c := chunk{msgs: []client.Message{m}, parts: []int32{res.partition}}
	return publishChunk(r.Context(), s, topic, &c, res)
}

// queryPartition reads ?partition=; -1 when empty.
func queryPartition(s string) (int32, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.ParseUint(s, 10, 30)
	if err != nil {
		return 0, badRequest("partition must be an integer from 0, not " + strconv.Quote(s))
	}
	return int32(n), nil
}

// published collects a request's acks; publishChunk calls add from one
// goroutine at a time, in the request's order.
type published struct {
	mode      ackMode
	partition int32 // ?partition=, for records that name none; -1 when not given
	count     int
	acks      []client.Ack
}

func (p *published) add(acks []client.Ack) {
	for _, a := range acks {
		if a.Offset >= 0 {
			p.count++
		}
	}
	if p.mode != acksNone {
		p.acks = append(p.acks, acks...)
	}
}

// publishChunk publishes c's records, those that name a partition there
// and the others by key (or spread), and adds their acks to res in the
// records' order. Records are kept in order within each partition, but
// for a record that names one and a record its key sends there, which go
// in different calls.
func publishChunk(ctx context.Context, s *gateway.Session, topic string, c *chunk, res *published) error {
	if len(c.msgs) == 0 {
		return nil
	}
	if res.partition >= 0 {
		for i, p := range c.parts {
			if p < 0 {
				c.parts[i] = res.partition
			}
		}
	}
	same := true
	for _, p := range c.parts[1:] {
		same = same && p == c.parts[0]
	}
	if same {
		acks, err := s.PublishBatch(ctx, topic, c.msgs, partitionOpts(c.parts[0])...)
		if err != nil {
			return storedPart(err, acks, res)
		}
		res.add(acks)
		return nil
	}
	return publishGroups(ctx, s, topic, c, res)
}

func partitionOpts(p int32) []client.PublishOption {
	if p < 0 {
		return nil
	}
	return []client.PublishOption{client.ToPartition(int(p))}
}

// publishGroups publishes a chunk whose records name different
// partitions: one PublishBatch per partition, at once.
func publishGroups(ctx context.Context, s *gateway.Session, topic string, c *chunk, res *published) error {
	groups := map[int32][]int{}
	for i, p := range c.parts {
		groups[p] = append(groups[p], i)
	}
	acks := make([]client.Ack, len(c.msgs))
	errs := make([]error, 0, len(groups))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p, idx := range groups {
		msgs := make([]client.Message, len(idx))
		for j, i := range idx {
			msgs[j] = c.msgs[i]
		}
		wg.Go(func() {
			got, err := s.PublishBatch(ctx, topic, msgs, partitionOpts(p)...)
			for j, i := range idx {
				acks[i] = got[j]
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return storedPart(errs[0], acks, res)
	}
	res.add(acks)
	return nil
}

// storedPart adds the acks of a chunk that failed in part: every
// record's, those not stored with partition and offset -1. Records of
// several partitions, or of batches after a failed one, may be stored
// past the first that was not, so the answer says of each record whether
// it was, and a client retries only those that were not.
func storedPart(err error, acks []client.Ack, res *published) error {
	res.add(acks)
	return err
}

// appendBody appends the answer: the count, the acks in the request's
// mode, and the error when some records were stored before one failed.
func (p *published) appendBody(dst []byte, e *errorDetail) []byte {
	dst = append(dst, `{"count":`...)
	dst = strconv.AppendInt(dst, int64(p.count), 10)
	switch p.mode {
	case acksRecords:
		dst = append(dst, `,"records":[`...)
		for i, a := range p.acks {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendAck(dst, a, 0)
		}
		dst = append(dst, ']')
	case acksRanges:
		dst = append(dst, `,"ranges":[`...)
		for i := 0; i < len(p.acks); {
			j := i + 1
			for j < len(p.acks) && (p.acks[j].Offset < 0 && p.acks[i].Offset < 0 ||
				p.acks[j].Partition == p.acks[i].Partition && p.acks[j].Offset == p.acks[i].Offset+int64(j-i)) {
				j++
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendAck(dst, p.acks[i], j-i)
			i = j
		}
		dst = append(dst, ']')
	}
	if e != nil {
		dst = append(dst, `,"error":{"code":`...)
		dst = appendString(dst, e.Code)
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, e.Message)
		if e.Line > 0 {
			dst = append(dst, `,"line":`...)
			dst = strconv.AppendInt(dst, int64(e.Line), 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, "}\n"...)
}

// appendAck appends {"partition","offset"} and, for a range, its count.
func appendAck(dst []byte, a client.Ack, count int) []byte {
	dst = append(dst, `{"partition":`...)
	dst = strconv.AppendInt(dst, int64(a.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, a.Offset, 10)
	if count > 0 {
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendInt(dst, int64(count), 10)
	}
	return append(dst, '}')
}
