package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The admin API: JSON under /api/v1/, behind the admin token (see
// docs/ADMIN.md). Handlers run on net/http's goroutines, never on an event
// loop or a shard: they read the Broker's views and change state through
// it, on the paths the protocol uses, so a change is validated and
// persisted alike.

// maxAdminBody bounds a request body; a larger one gets 413.
const maxAdminBody = 1 << 20

// registerAdmin adds the admin API to mux, every route behind auth.
func (s *Server) registerAdmin(mux *http.ServeMux, auth func(http.HandlerFunc) http.Handler) {
	handleRoutes(mux, []route{
		{"GET /api/v1/topics", s.apiListTopics},
		{"POST /api/v1/topics", s.apiCreateTopic},
		{"GET /api/v1/topics/{name}", s.apiDescribeTopic},
		{"GET /api/v1/topics/{name}/partitions", s.apiTopicPartitions},
		{"PATCH /api/v1/topics/{name}", s.apiUpdateTopic},
		{"DELETE /api/v1/topics/{name}", s.apiDeleteTopic},
		{"GET /api/v1/groups", s.apiListGroups},
		{"GET /api/v1/groups/{name}", s.apiDescribeGroup},
		{"POST /api/v1/groups/{name}/reset", s.apiResetGroup},
		{"GET /api/v1/connections", s.apiConnections},
		{"GET /api/v1/shards", s.apiShards},
		{"GET /api/v1/cluster", s.apiCluster},
		{"POST /api/v1/cluster/transfer-leader", s.apiTransferLeader},
		{"POST /api/v1/cluster/rebalance", s.apiRebalance},
		{"POST /api/v1/cluster/add-node", s.apiAddNode},
		{"POST /api/v1/cluster/remove-node", s.apiRemoveNode},
		{"/api/v1/", s.apiNotFound},
	}, func(h http.HandlerFunc) http.Handler { return auth(s.whenReady(h)) })
}

// route is one endpoint of an API: its method and path, and its handler.
type route struct {
	pattern string
	h       http.HandlerFunc
}

// handleRoutes adds routes to mux, each handler wrapped by wrap.
func handleRoutes(mux *http.ServeMux, routes []route, wrap func(http.HandlerFunc) http.Handler) {
	for _, rt := range routes {
		mux.Handle(rt.pattern, wrap(rt.h))
	}
}

// whenReady answers 503 until Start has finished: the admin API reads
// topics and groups, which recovery is still filling in.
func (s *Server) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if why := s.b.Starting(); why != "" {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "not_ready", "the broker is not ready: "+why)
			return
		}
		if s.b.Draining() {
			writeError(w, http.StatusServiceUnavailable, "shutting_down", "the broker is shutting down")
			return
		}
		h(w, r)
	}
}

func (s *Server) apiNotFound(w http.ResponseWriter, r *http.Request) {
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
	case wire.CodeShuttingDown, wire.CodePartitionOffline, wire.CodeStorageUnavailable:
		return http.StatusServiceUnavailable
	case wire.CodeStorageFull:
		return http.StatusInsufficientStorage
	case wire.CodeNotLeader:
		return http.StatusMisdirectedRequest
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
func (s *Server) audit(r *http.Request, target string, err error) {
	by := adminOrigin(r)
	ev := telemetry.Event{Time: time.Now(), Kind: telemetry.EventAdminAction, Partition: -1, Actor: by.Actor,
		Remote: by.Remote, Action: clip(r.Method + " " + r.URL.Path), Target: target, Err: err}
	if p := principalOf(r); p != nil {
		ev.Principal, ev.Tenant = p.User, p.Tenant
	}
	s.b.Emit(ev)
}

// adminOrigin is who made an admin request, for the events it causes:
// "admin-token", or "user" for a user's credentials or a JWT.
func adminOrigin(r *http.Request) Origin {
	if p := principalOf(r); p != nil && !p.AdminToken {
		return Origin{Actor: "user", Remote: r.RemoteAddr}
	}
	return Origin{Actor: "admin-token", Remote: r.RemoteAddr}
}

// invalid is the error of a request the broker refuses as INVALID_ARGUMENT.
func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }

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
	Config     TopicConfig     `json:"config"`
	Totals     topicTotals     `json:"totals"`
	Parts      []partitionJSON `json:"partition_details,omitempty"`
}

func partitionsJSON(t *Topic) []partitionJSON {
	out := make([]partitionJSON, len(t.Parts))
	for i := range t.Parts {
		p := &t.Parts[i]
		st := &p.Log
		pj := partitionJSON{ID: p.ID, Shard: p.Shard, StartOffset: st.Start, EndOffset: st.End,
			Messages: st.End - st.Start, Bytes: st.Bytes, Segments: st.Segments,
			Subscribers: p.Subscribers, Corrupt: make([]rangeJSON, len(st.Corrupt)),
			State: p.State.String(), Reason: p.Reason, ReadErrors: st.ReadErrors}
		for j, c := range st.Corrupt {
			pj.Corrupt[j] = rangeJSON{From: c.From, To: c.To}
		}
		out[i] = pj
	}
	return out
}

func describeJSON(t *Topic, withParts bool) topicJSON {
	parts := partitionsJSON(t)
	tj := topicJSON{Name: t.Name, Partitions: len(t.Parts), Config: t.Config}
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

func (s *Server) apiListTopics(w http.ResponseWriter, _ *http.Request) {
	list := s.b.Topics()
	out := make([]topicJSON, len(list))
	for i := range list {
		out[i] = describeJSON(&list[i], false)
	}
	writeJSON(w, http.StatusOK, map[string]any{"topics": out})
}

// topicOr404 finds the topic the path names, or answers 404.
func (s *Server) topicOr404(w http.ResponseWriter, r *http.Request) *Topic {
	name := r.PathValue("name")
	t, ok := s.b.Topic(name)
	if !ok {
		writeErr(w, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name)))
		return nil
	}
	return &t
}

func (s *Server) apiDescribeTopic(w http.ResponseWriter, r *http.Request) {
	if t := s.topicOr404(w, r); t != nil {
		writeJSON(w, http.StatusOK, describeJSON(t, true))
	}
}

func (s *Server) apiTopicPartitions(w http.ResponseWriter, r *http.Request) {
	if t := s.topicOr404(w, r); t != nil {
		writeJSON(w, http.StatusOK, map[string]any{"topic": t.Name, "partitions": partitionsJSON(t)})
	}
}

// createTopicRequest is the body of POST /api/v1/topics.
type createTopicRequest struct {
	Name       string                     `json:"name"`
	Partitions *int64                     `json:"partitions"`
	Config     map[string]json.RawMessage `json:"config"`
}

func (s *Server) apiCreateTopic(w http.ResponseWriter, r *http.Request) {
	var req createTopicRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.audit(r, "topics", err)
		return
	}
	t, err := s.createFromRequest(adminOrigin(r), req)
	s.audit(r, "topic/"+req.Name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, describeJSON(&t, true))
}

func (s *Server) createFromRequest(by Origin, req createTopicRequest) (Topic, error) {
	if req.Name == "" {
		return Topic{}, invalid(`"name" is required`)
	}
	var parts uint32
	if req.Partitions != nil {
		if *req.Partitions < 1 || *req.Partitions > int64(s.cfg.MaxPartitions) {
			return Topic{}, invalid("partitions must be 1.." + strconv.Itoa(s.cfg.MaxPartitions) +
				", got " + strconv.FormatInt(*req.Partitions, 10))
		}
		parts = uint32(*req.Partitions)
	}
	kvs, err := ConfigKVs(req.Config)
	if err != nil {
		return Topic{}, err
	}
	t, err := s.b.CreateTopic(by, req.Name, parts, kvs)
	return t, snakeKeyError(err)
}

func (s *Server) apiUpdateTopic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var changes map[string]json.RawMessage
	if err := decodeBody(w, r, &changes); err != nil {
		s.audit(r, "topic/"+name, err)
		return
	}
	kvs, err := ConfigKVs(changes)
	if err == nil && len(kvs) == 0 {
		err = invalid("no config keys to change; send e.g. {\"retention\":\"2h\"}")
	}
	var t Topic
	if err == nil {
		t, err = s.b.UpdateTopic(adminOrigin(r), name, kvs)
		err = snakeKeyError(err)
	}
	s.audit(r, "topic/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, describeJSON(&t, true))
}

func (s *Server) apiDeleteTopic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := s.b.DeleteTopic(adminOrigin(r), name)
	s.audit(r, "topic/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ConfigKVs turns JSON config values into the protocol's key/value list.
// Keys are the config keys in snake case (max_subscribers), as everywhere
// in the admin API; the protocol's own spelling (max-subscribers) is
// refused with a message that names the key to use. Values are strings,
// or numbers where a number is natural: a count, a byte size, or a
// retention in seconds. The keys are sorted so the first error reported
// does not depend on map order.
func ConfigKVs(m map[string]json.RawMessage) ([]wire.KV, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	kvs := make([]wire.KV, 0, len(m))
	for _, k := range keys {
		if err := checkConfigKey(k); err != nil {
			return nil, err
		}
		v, err := configValue(k, m[k])
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, wire.KV{Key: strings.ReplaceAll(k, "_", "-"), Value: v})
	}
	return kvs, nil
}

// The topic config keys as the admin API spells them: the protocol's keys
// (engine's, in package topic) with "_" for "-", repeated here since
// httpapi cannot import them; engine's tests check the two lists agree.
const (
	configMaxSubscribers  = "max_subscribers"
	configStorage         = "storage"
	configFsync           = "fsync"
	configRetention       = "retention"
	configRetentionBytes  = "retention_bytes"
	configDeadLetterTopic = "dead_letter_topic"
	configMaxDeliveries   = "max_deliveries"
	configEncryption      = "encryption"
)

// ConfigKeys lists the topic config keys the admin API takes and answers,
// in the order TopicConfig has them.
func ConfigKeys() []string {
	return []string{configMaxSubscribers, configStorage, configFsync, configRetention,
		configRetentionBytes, configDeadLetterTopic, configMaxDeliveries, configEncryption}
}

// checkConfigKey refuses a key that is not a config key, saying which to
// use when it is one in the protocol's spelling.
func checkConfigKey(k string) error {
	keys := ConfigKeys()
	if slices.Contains(keys, k) {
		return nil
	}
	if snake := strings.ReplaceAll(k, "-", "_"); snake != k && slices.Contains(keys, snake) {
		return invalid("topic config keys are snake_case in the admin API: " + strconv.Quote(snake) +
			", not " + strconv.Quote(k))
	}
	return invalid("unknown topic config key " + strconv.Quote(k) + "; the keys are " + strings.Join(keys, ", "))
}

// snakeKeyError spells the config key that begins the message of a
// refused value ("max-subscribers must be 1..16, got ...", the broker's
// words for every protocol) as the admin API does. Only the first word is
// looked at, so a value quoted later is never rewritten.
func snakeKeyError(err error) error {
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeInvalidArgument {
		return err
	}
	first, rest, ok := strings.Cut(we.Message, " ")
	snake := strings.ReplaceAll(first, "-", "_")
	if !ok || snake == first || !slices.Contains(ConfigKeys(), snake) {
		return err
	}
	spelled := *we
	spelled.Message = snake + " " + rest
	return &spelled
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
	case configRetention:
		secs, err := n.Float64()
		if err != nil {
			return "", invalid("retention must be a duration such as \"1h\" or a number of seconds, got " + n.String())
		}
		return time.Duration(secs * float64(time.Second)).String(), nil
	case configMaxSubscribers, configRetentionBytes, configMaxDeliveries:
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
	g := groupJSON{Name: gi.Group, Topic: gi.Topic, Mode: gi.Mode.String(), Generation: gi.Generation,
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

func (s *Server) apiListGroups(w http.ResponseWriter, _ *http.Request) {
	out := []groupJSON{}
	for _, name := range s.b.Groups() {
		gi, err := s.b.DescribeGroup(name)
		if err != nil {
			continue // removed since the list was taken
		}
		out = append(out, groupToJSON(gi))
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func (s *Server) apiDescribeGroup(w http.ResponseWriter, r *http.Request) {
	gi, err := s.b.DescribeGroup(r.PathValue("name"))
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

func (s *Server) apiResetGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req resetRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.audit(r, "group/"+name, err)
		return
	}
	st, err := req.start()
	if err == nil {
		err = s.b.ResetGroup(r.Context(), adminOrigin(r), name, st)
	}
	s.audit(r, "group/"+name, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	gi, err := s.b.DescribeGroup(name)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, groupToJSON(gi))
}

func (s *Server) apiConnections(w http.ResponseWriter, _ *http.Request) {
	out := s.b.Connections()
	if out == nil {
		out = []Connection{}
	}
	slices.SortFunc(out, func(a, b Connection) int { return a.ConnectedAt.Compare(b.ConnectedAt) })
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

// apiCluster reports this node's view of its cluster: the nodes, the
// controller, and every replicated partition (404 on a single node).
func (s *Server) apiCluster(w http.ResponseWriter, _ *http.Request) {
	c, ok := s.b.Cluster()
	if !ok {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker is a single node (serve --peers makes a cluster)")
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// apiTransferLeader hands a partition's leadership to another node:
// {"topic", "partition", "to"}, sent to the partition's leader.
func (s *Server) apiTransferLeader(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Topic     string `json:"topic"`
		Partition int    `json:"partition"`
		To        uint64 `json:"to"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		s.audit(r, "cluster", err)
		return
	}
	if _, ok := s.b.Cluster(); !ok {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker is a single node")
		return
	}
	err := s.b.TransferLeader(adminOrigin(r), req.Topic, req.Partition, req.To)
	s.audit(r, "topic/"+req.Topic, err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"topic": req.Topic, "partition": req.Partition, "to": req.To})
}

// apiRebalance spreads preferred leaders evenly; the leaders follow.
func (s *Server) apiRebalance(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.b.Cluster(); !ok {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker is a single node")
		return
	}
	err := s.b.Rebalance(r.Context(), adminOrigin(r))
	s.audit(r, "cluster", err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"rebalance": "started"})
}

// apiAddNode records a new node: {"id", "cluster_addr"}.
func (s *Server) apiAddNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID          uint64 `json:"id"`
		ClusterAddr string `json:"cluster_addr"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		s.audit(r, "cluster", err)
		return
	}
	if _, ok := s.b.Cluster(); !ok {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker is a single node")
		return
	}
	err := s.b.AddNode(r.Context(), adminOrigin(r), req.ID, req.ClusterAddr)
	s.audit(r, "cluster", err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"node": req.ID, "status": "joining"})
}

// apiRemoveNode removes a node for good: {"id"}.
func (s *Server) apiRemoveNode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID uint64 `json:"id"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		s.audit(r, "cluster", err)
		return
	}
	if _, ok := s.b.Cluster(); !ok {
		writeError(w, http.StatusNotFound, "not_clustered", "this broker is a single node")
		return
	}
	err := s.b.RemoveNode(r.Context(), adminOrigin(r), req.ID)
	s.audit(r, "cluster", err)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"node": req.ID, "status": "removed"})
}

func (s *Server) apiShards(w http.ResponseWriter, _ *http.Request) {
	shards := s.b.Shards()
	out := make([]shardJSON, len(shards))
	for i, sh := range shards {
		out[i] = shardJSON{ID: sh.ID, InboxDepth: sh.InboxDepth, Partitions: sh.Partitions,
			Batches: sh.Batches, Messages: sh.Messages}
	}
	writeJSON(w, http.StatusOK, map[string]any{"shards": out})
}
