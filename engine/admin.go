package engine

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The admin API: JSON under /api/v1/, behind the admin token (see
// docs/ADMIN.md). Handlers run on net/http's goroutines, never on an event
// loop or a shard: they read what is safe from any goroutine (registry
// snapshots, log stats, atomics) and change state through the same engine
// paths the protocol uses, so a change is validated and persisted alike.

// maxAdminBody bounds a request body; a larger one gets 413.
const maxAdminBody = 1 << 20

// registerAdmin adds the admin API to mux, every route behind the token.
func (e *Engine) registerAdmin(mux *http.ServeMux) {
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /api/v1/topics", e.apiListTopics},
		{"POST /api/v1/topics", e.apiCreateTopic},
		{"GET /api/v1/topics/{name}", e.apiDescribeTopic},
		{"GET /api/v1/topics/{name}/partitions", e.apiTopicPartitions},
		{"PATCH /api/v1/topics/{name}", e.apiUpdateTopic},
		{"DELETE /api/v1/topics/{name}", e.apiDeleteTopic},
		{"GET /api/v1/groups", e.apiListGroups},
		{"GET /api/v1/groups/{name}", e.apiDescribeGroup},
		{"POST /api/v1/groups/{name}/reset", e.apiResetGroup},
		{"GET /api/v1/connections", e.apiConnections},
		{"GET /api/v1/shards", e.apiShards},
		{"/api/v1/", e.apiNotFound},
	}
	for _, rt := range routes {
		mux.Handle(rt.pattern, e.requireToken(e.whenReady(rt.h)))
	}
}

// whenReady answers 503 until Start has finished: the admin API reads
// topics and groups, which recovery is still filling in.
func (e *Engine) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if why := e.notReady.Load(); why != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "not_ready", "the broker is not ready: "+*why)
			return
		}
		if e.draining.Load() {
			writeError(w, http.StatusServiceUnavailable, "shutting_down", "the broker is shutting down")
			return
		}
		h(w, r)
	}
}

func (e *Engine) apiNotFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not_found", "no admin endpoint "+r.Method+" "+r.URL.Path)
}

// apiError is the body of every error answer.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // JSON for programs; the dashboard inserts text, never HTML
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var body apiError
	body.Error.Code, body.Error.Message = code, msg
	writeJSON(w, status, body)
}

// writeErr answers err: a wire error keeps its code (as snake case) and
// gets the HTTP status that matches it; anything else is a 500.
func writeErr(w http.ResponseWriter, err error) {
	var we *wire.Error
	if !errors.As(err, &we) {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	msg := we.Message
	if msg == "" {
		msg = we.Code.String()
	}
	writeError(w, httpStatus(we.Code), strings.ReplaceAll(we.Code.String(), " ", "_"), msg)
}

// httpStatus maps a protocol error code to the HTTP status of its answer.
func httpStatus(c wire.Code) int {
	switch c {
	case wire.CodeInvalidArgument, wire.CodeMalformed, wire.CodeUnknownPartition, wire.CodeOffsetOutOfRange:
		return http.StatusBadRequest
	case wire.CodeUnknownTopic, wire.CodeUnknownGroup:
		return http.StatusNotFound
	case wire.CodeTopicExists, wire.CodeGroupActive:
		return http.StatusConflict
	case wire.CodeTooManyTopics, wire.CodeTooManySubscribers:
		return http.StatusTooManyRequests
	case wire.CodeShuttingDown, wire.CodePartitionOffline:
		return http.StatusServiceUnavailable
	case wire.CodeStorageFull:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// decodeBody reads a JSON body of at most maxAdminBody bytes into v,
// refusing unknown fields and trailing data. When the body is bad it
// answers the request itself and returns why, for the audit.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("unexpected data after the JSON value")
			var tooBig *http.MaxBytesError
			if errors.As(terr, &tooBig) {
				err = terr
			}
		}
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
			"the request body is larger than "+strconv.Itoa(maxAdminBody)+" bytes")
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid_json", "the request body is empty; a JSON object is expected")
	default:
		writeError(w, http.StatusBadRequest, "invalid_json", "bad request body: "+err.Error())
	}
	return err
}

// audit emits the admin-action event of a state-changing request.
func (e *Engine) audit(r *http.Request, target string, err error) {
	by := adminOrigin(r)
	e.emit(Event{Time: time.Now(), Kind: EventAdminAction, Partition: -1, Actor: by.actor,
		Remote: by.remote, Action: clip(r.Method + " " + r.URL.Path), Target: target, Err: err})
}

// adminOrigin is who made an admin request, for the events it causes.
func adminOrigin(r *http.Request) origin {
	return origin{actor: "admin-token", remote: r.RemoteAddr}
}

// topicConfigJSON is a topic's config as typed JSON. Its keys are the
// config keys, so a GET's config can be sent back in a PATCH.
type topicConfigJSON struct {
	MaxSubscribers  int    `json:"max-subscribers"`
	Storage         string `json:"storage"`
	Fsync           string `json:"fsync"`
	Retention       string `json:"retention"`
	RetentionBytes  int64  `json:"retention-bytes"`
	DeadLetterTopic string `json:"dead-letter-topic"`
	MaxDeliveries   int    `json:"max-deliveries"`
}

func configJSON(tc TopicConfig) topicConfigJSON {
	return topicConfigJSON{MaxSubscribers: tc.MaxSubscribers, Storage: tc.Storage, Fsync: tc.Fsync.String(),
		Retention: tc.Retention.String(), RetentionBytes: tc.RetentionBytes,
		DeadLetterTopic: tc.DeadLetterTopic, MaxDeliveries: tc.MaxDeliveries}
}

// rangeJSON is a half-open range of offsets found corrupt.
type rangeJSON struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// partitionJSON is one partition of a topic.
type partitionJSON struct {
	ID          int32       `json:"id"`
	Shard       int         `json:"shard"`
	StartOffset int64       `json:"start_offset"`
	EndOffset   int64       `json:"end_offset"`
	Messages    int64       `json:"messages"`
	Bytes       int64       `json:"bytes"`
	Segments    int         `json:"segments"`
	Subscribers int         `json:"subscribers"`
	Corrupt     []rangeJSON `json:"corrupt"`
	State       string      `json:"state"`            // online, read-only or offline
	Reason      string      `json:"reason,omitempty"` // why it is not online
	ReadErrors  uint64      `json:"read_errors"`      // reads that failed with an I/O error
}

// topicTotals sums a topic's partitions.
type topicTotals struct {
	Messages    int64 `json:"messages"`    // held: the sum of end - start
	EndOffsets  int64 `json:"end_offsets"` // the sum of end offsets; its rate is the publish rate
	Bytes       int64 `json:"bytes"`
	Subscribers int   `json:"subscribers"`
	ReadOnly    int   `json:"read_only_partitions"`
	Offline     int   `json:"offline_partitions"`
}

// topicJSON describes a topic; Parts is left out of the list.
type topicJSON struct {
	Name       string          `json:"name"`
	Partitions int             `json:"partitions"`
	Config     topicConfigJSON `json:"config"`
	Totals     topicTotals     `json:"totals"`
	Parts      []partitionJSON `json:"partition_details,omitempty"`
}

func partitionsJSON(t *Topic) []partitionJSON {
	out := make([]partitionJSON, len(t.Parts))
	for i, p := range t.Parts {
		st := p.Log.Stats()
		state, why := partitionState(&st)
		pj := partitionJSON{ID: p.ID, Shard: p.Shard.ID(), StartOffset: st.Start, EndOffset: st.End,
			Messages: st.End - st.Start, Bytes: st.Bytes, Segments: st.Segments,
			Subscribers: p.Subscribers(), Corrupt: make([]rangeJSON, len(st.Corrupt)),
			State: state.String(), Reason: why, ReadErrors: st.ReadErrors}
		for j, c := range st.Corrupt {
			pj.Corrupt[j] = rangeJSON{From: c.From, To: c.To}
		}
		out[i] = pj
	}
	return out
}

func describeJSON(t *Topic, withParts bool) topicJSON {
	parts := partitionsJSON(t)
	tj := topicJSON{Name: t.Name, Partitions: len(t.Parts), Config: configJSON(t.Config())}
	for _, p := range parts {
		tj.Totals.Messages += p.Messages
		tj.Totals.EndOffsets += p.EndOffset
		tj.Totals.Bytes += p.Bytes
		tj.Totals.Subscribers += p.Subscribers
		switch p.State {
		case wire.PartitionReadOnly.String():
			tj.Totals.ReadOnly++
		case wire.PartitionOffline.String():
			tj.Totals.Offline++
		}
	}
	if withParts {
		tj.Parts = parts
	}
	return tj
}

func (e *Engine) apiListTopics(w http.ResponseWriter, _ *http.Request) {
	list := e.topics.list()
	out := make([]topicJSON, len(list))
	for i, t := range list {
		out[i] = describeJSON(t, false)
	}
	writeJSON(w, http.StatusOK, map[string]any{"topics": out})
}

// topicOr404 finds the topic the path names, or answers 404.
func (e *Engine) topicOr404(w http.ResponseWriter, r *http.Request) *Topic {
	name := r.PathValue("name")
	t := e.topics.get([]byte(name))
	if t == nil {
		writeErr(w, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name)))
	}
	return t
}

func (e *Engine) apiDescribeTopic(w http.ResponseWriter, r *http.Request) {
	if t := e.topicOr404(w, r); t != nil {
		writeJSON(w, http.StatusOK, describeJSON(t, true))
	}
}

func (e *Engine) apiTopicPartitions(w http.ResponseWriter, r *http.Request) {
	if t := e.topicOr404(w, r); t != nil {
		writeJSON(w, http.StatusOK, map[string]any{"topic": t.Name, "partitions": partitionsJSON(t)})
	}
}

// createTopicRequest is the body of POST /api/v1/topics.
type createTopicRequest struct {
	Name       string                     `json:"name"`
	Partitions *int64                     `json:"partitions"`
	Config     map[string]json.RawMessage `json:"config"`
}

func (e *Engine) apiCreateTopic(w http.ResponseWriter, r *http.Request) {
	var req createTopicRequest
	if err := decodeBody(w, r, &req); err != nil {
		e.audit(r, "topics", err)
		return
	}
	t, err := e.createFromRequest(adminOrigin(r), req)
	e.audit(r, "topic/"+req.Name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, describeJSON(t, true))
}

func (e *Engine) createFromRequest(by origin, req createTopicRequest) (*Topic, error) {
	if req.Name == "" {
		return nil, invalid(`"name" is required`)
	}
	var parts uint32
	if req.Partitions != nil {
		if *req.Partitions < 1 || *req.Partitions > int64(e.cfg.MaxPartitions) {
			return nil, invalid("partitions must be 1.." + strconv.Itoa(e.cfg.MaxPartitions) +
				", got " + strconv.FormatInt(*req.Partitions, 10))
		}
		parts = uint32(*req.Partitions)
	}
	kvs, err := configKVs(req.Config)
	if err != nil {
		return nil, err
	}
	return e.createTopicBy(by, req.Name, parts, kvs, false)
}

func (e *Engine) apiUpdateTopic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var changes map[string]json.RawMessage
	if err := decodeBody(w, r, &changes); err != nil {
		e.audit(r, "topic/"+name, err)
		return
	}
	kvs, err := configKVs(changes)
	if err == nil && len(kvs) == 0 {
		err = invalid("no config keys to change; send e.g. {\"retention\":\"2h\"}")
	}
	var t *Topic
	if err == nil {
		t, err = e.updateTopicBy(adminOrigin(r), name, kvs)
	}
	e.audit(r, "topic/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, describeJSON(t, true))
}

func (e *Engine) apiDeleteTopic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := e.deleteTopicBy(adminOrigin(r), name)
	e.audit(r, "topic/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// configKVs turns JSON config values into the protocol's key/value list.
// Keys are the config keys; snake case (max_subscribers) is accepted too.
// Values are strings, or numbers where a number is natural: a count, a
// byte size, or a retention in seconds. The keys are sorted so the first
// error reported does not depend on map order.
func configKVs(m map[string]json.RawMessage) ([]wire.KV, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kvs := make([]wire.KV, 0, len(m))
	for _, k := range keys {
		key := strings.ReplaceAll(k, "_", "-")
		v, err := configValue(key, m[k])
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, wire.KV{Key: key, Value: v})
	}
	return kvs, nil
}

func configValue(key string, raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", invalid(key + " must be a string or a number, got " + string(raw))
	}
	switch key {
	case ConfigRetention:
		secs, err := n.Float64()
		if err != nil {
			return "", invalid("retention must be a duration such as \"1h\" or a number of seconds, got " + n.String())
		}
		return time.Duration(secs * float64(time.Second)).String(), nil
	case ConfigMaxSubscribers, ConfigRetentionBytes, ConfigMaxDeliveries:
		return n.String(), nil
	}
	return "", invalid(key + " must be a string, got " + n.String())
}

// groupMemberJSON is a group member and the partitions assigned to it.
type groupMemberJSON struct {
	ID         string  `json:"id"`
	Partitions []int32 `json:"partitions"`
}

// groupPartitionJSON is a group's position in one partition.
type groupPartitionJSON struct {
	Partition int32  `json:"partition"`
	Owner     string `json:"owner"`
	Committed int64  `json:"committed"` // -1: nothing committed
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"` // -1: nothing committed
	Pending   uint32 `json:"pending"`
}

// groupJSON describes a group. Lag sums the partitions with a commit.
type groupJSON struct {
	Name       string               `json:"name"`
	Topic      string               `json:"topic"`
	Mode       string               `json:"mode"`
	Generation uint32               `json:"generation"`
	Members    []groupMemberJSON    `json:"members"`
	Partitions []groupPartitionJSON `json:"partitions"`
	Lag        int64                `json:"lag"`
}

func groupToJSON(gi wire.GroupInfo) groupJSON {
	g := groupJSON{Name: gi.Group, Topic: gi.Topic, Mode: modeName(gi.Mode), Generation: gi.Generation,
		Members: make([]groupMemberJSON, len(gi.Members)), Partitions: make([]groupPartitionJSON, len(gi.Partitions))}
	idx := map[string]int{}
	for i, id := range gi.Members {
		g.Members[i] = groupMemberJSON{ID: id, Partitions: []int32{}}
		idx[id] = i
	}
	for i, p := range gi.Partitions {
		g.Partitions[i] = groupPartitionJSON{Partition: p.Partition, Owner: p.Owner, Committed: p.Committed,
			End: p.End, Lag: p.Lag, Pending: p.Pending}
		if j, ok := idx[p.Owner]; ok && p.Owner != "" {
			g.Members[j].Partitions = append(g.Members[j].Partitions, p.Partition)
		}
		g.Lag += max(p.Lag, 0)
	}
	return g
}

func (e *Engine) apiListGroups(w http.ResponseWriter, _ *http.Request) {
	out := []groupJSON{}
	for _, s := range e.groups.List() {
		gi, err := e.groups.Describe(s.Group)
		if err != nil {
			continue // removed since the list was taken
		}
		out = append(out, groupToJSON(gi))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func (e *Engine) apiDescribeGroup(w http.ResponseWriter, r *http.Request) {
	gi, err := e.groups.Describe(r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, groupToJSON(gi))
}

// resetRequest is the body of POST /api/v1/groups/{name}/reset.
type resetRequest struct {
	To     string `json:"to"`     // earliest | latest | offset | time
	Offset *int64 `json:"offset"` // with "offset": the offset in every partition
	Time   string `json:"time"`   // with "time": RFC 3339
}

func (req resetRequest) start() (wire.Start, error) {
	switch req.To {
	case "earliest":
		return wire.Start{Kind: wire.StartEarliest}, nil
	case "latest":
		return wire.Start{Kind: wire.StartLatest}, nil
	case "offset":
		if req.Offset == nil || *req.Offset < 0 {
			return wire.Start{}, invalid(`"to":"offset" needs a non-negative "offset"`)
		}
		return wire.Start{Kind: wire.StartOffset, Value: *req.Offset}, nil
	case "time":
		ts, err := time.Parse(time.RFC3339Nano, req.Time)
		if err != nil {
			return wire.Start{}, invalid(`"to":"time" needs "time" in RFC 3339, such as 2024-05-01T12:00:00Z; got ` + strconv.Quote(req.Time))
		}
		return wire.Start{Kind: wire.StartTime, Value: ts.UnixNano()}, nil
	}
	return wire.Start{}, invalid(`"to" must be "earliest", "latest", "offset" or "time", got ` + strconv.Quote(req.To))
}

func (e *Engine) apiResetGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req resetRequest
	if err := decodeBody(w, r, &req); err != nil {
		e.audit(r, "group/"+name, err)
		return
	}
	st, err := req.start()
	if err == nil {
		err = e.resetGroupWait(r.Context(), adminOrigin(r), name, st)
	}
	e.audit(r, "group/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	gi, err := e.groups.Describe(name)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, groupToJSON(gi))
}

// resetGroupWait resets a group and waits until its new offsets are
// durable, or the request is gone.
func (e *Engine) resetGroupWait(ctx context.Context, by origin, name string, st wire.Start) error {
	done := make(chan error, 1)
	e.groups.Reset(by.group(), name, st, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return wire.Errorf(wire.CodeShuttingDown, "the request ended before the reset was durable: "+ctx.Err().Error())
	}
}

// sessionInfo is what the admin API reads of a session from other
// goroutines: set on the session's event loop, read with atomics.
type sessionInfo struct {
	since  time.Time // immutable
	name   atomic.Pointer[string]
	subs   atomic.Int32
	groups atomic.Int32
}

// noteCounts publishes the session's subscription and membership counts;
// its event loop calls it after each read.
func (s *session) noteCounts() {
	s.info.subs.Store(int32(len(s.subs)))
	s.info.groups.Store(int32(len(s.members)))
}

// connectionJSON is one client connection.
type connectionJSON struct {
	Remote        string    `json:"remote"`
	Client        string    `json:"client"`
	ConnectedAt   time.Time `json:"connected_at"`
	Subscriptions int       `json:"subscriptions"`
	Groups        int       `json:"groups"`
	QueuedBytes   int64     `json:"queued_bytes"` // in the outbox and unsent in the socket buffer
}

func (e *Engine) apiConnections(w http.ResponseWriter, _ *http.Request) {
	out := []connectionJSON{}
	e.sessions.Range(func(k, _ any) bool {
		s := k.(*session)
		c := connectionJSON{Remote: s.t.remoteAddr(), ConnectedAt: s.info.since,
			Subscriptions: int(s.info.subs.Load()), Groups: int(s.info.groups.Load()),
			QueuedBytes: int64(s.out.Queued())}
		if n := s.info.name.Load(); n != nil {
			c.Client = *n
		}
		c.QueuedBytes += s.t.unsentBytes()
		out = append(out, c)
		return true
	})
	slices.SortFunc(out, func(a, b connectionJSON) int { return a.ConnectedAt.Compare(b.ConnectedAt) })
	writeJSON(w, http.StatusOK, map[string]any{"connections": out})
}

// shardJSON is one shard.
type shardJSON struct {
	ID         int    `json:"id"`
	InboxDepth int    `json:"inbox_depth"`
	Partitions int    `json:"partitions"`
	Batches    uint64 `json:"batches"`
	Messages   uint64 `json:"messages"`
}

func (e *Engine) apiShards(w http.ResponseWriter, _ *http.Request) {
	out := make([]shardJSON, len(e.shards))
	for i, s := range e.shards {
		b, m := s.Stats()
		out[i] = shardJSON{ID: s.ID(), InboxDepth: s.InboxLen(), Batches: b, Messages: m}
	}
	for _, t := range e.topics.list() {
		for _, p := range t.Parts {
			out[p.Shard.ID()].Partitions++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"shards": out})
}
