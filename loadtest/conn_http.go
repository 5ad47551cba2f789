package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fastjson"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The http protocol drives the broker's HTTP gateway (package httpgw,
// docs/HTTP.md): producers POST NDJSON bodies of many records, base64
// values, answered with acks=none; subscribers follow the topic's event
// stream; the topic is set up through /v1/topics. Config.Server is the
// HTTP listener's host:port.

func init() { registerProtocol("http", dialHTTP) }

const (
	// httpBodyRecords and httpBodyBytes bound one publish request: large
	// enough that a request's own cost (a round trip, headers, the
	// answer) is small beside its records.
	httpBodyRecords = 8192
	httpBodyBytes   = 4 << 20
	// httpInFlight bounds the publish requests in flight per connection,
	// one per topic and partition (so that a partition's records stay in
	// order) and this many in all.
	httpInFlight = 4
)

type httpConn struct {
	base   string // scheme://host:port
	hc     *http.Client
	authz  string // the Authorization header, or ""
	slots  chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	bodies map[httpTarget]*httpBody
	err    error // the first failed request's
}

// httpTarget is where a body's records go: a topic and a partition (-1:
// the broker's choice).
type httpTarget struct {
	topic     string
	partition int
}

// httpBody is a request being filled; busy is held while one of the
// target's requests is in flight.
type httpBody struct {
	buf   []byte
	n     int
	busy  chan struct{}
	spare []byte
}

func dialHTTP(ctx context.Context, cfg *Config, _ []client.Option) (conn, error) {
	scheme := "http"
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = httpInFlight + 2
	if cfg.TLS != nil {
		scheme, tr.TLSClientConfig = "https", cfg.TLS.Clone()
	}
	c := &httpConn{base: scheme + "://" + cfg.Server, hc: &http.Client{Transport: tr},
		slots: make(chan struct{}, httpInFlight), bodies: map[httpTarget]*httpBody{}}
	switch {
	case cfg.Token != "":
		c.authz = "Bearer " + cfg.Token
	case cfg.User != "":
		c.authz = "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.User+":"+cfg.Password))
	}
	// One request checks the address and the credentials now, as a
	// native dial does.
	if _, err := c.call(ctx, http.MethodGet, "/v1/topics", nil, nil); err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	return c, nil
}

func (c *httpConn) PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error {
	return c.PublishBatchAsync(ctx, topic, []client.Message{msg}, opts...)
}

// PublishBatchAsync appends msgs to the target's body, sending it once it
// is full.
func (c *httpConn) PublishBatchAsync(ctx context.Context, topic string, msgs []client.Message, opts ...client.PublishOption) error {
	t := httpTarget{topic: topic, partition: -1}
	for _, o := range opts {
		if p, ok := o.Partition(); ok {
			t.partition = p
		}
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	b := c.bodies[t]
	if b == nil {
		b = &httpBody{busy: make(chan struct{}, 1)}
		c.bodies[t] = b
	}
	c.mu.Unlock()
	for i := range msgs {
		b.buf = appendNDJSON(b.buf, &msgs[i])
		b.n++
		if b.n >= httpBodyRecords || len(b.buf) >= httpBodyBytes {
			if err := c.send(ctx, t, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendNDJSON appends one record line: the value in base64, and the key
// when there is one.
func appendNDJSON(dst []byte, m *client.Message) []byte {
	dst = append(dst, `{"value":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, m.Value)
	if m.Key != nil {
		dst = append(dst, `","key":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Key)
	}
	return append(dst, "\"}\n"...)
}

// send posts b's records, in the background once a slot is free and the
// target's previous request is answered.
func (c *httpConn) send(ctx context.Context, t httpTarget, b *httpBody) error {
	if b.n == 0 {
		return nil
	}
	select {
	case b.busy <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		<-b.busy
		return ctx.Err()
	}
	body := b.buf
	b.buf, b.spare, b.n = b.spare[:0], nil, 0
	q := url.Values{"encoding": {"base64"}, "acks": {"none"}}
	if t.partition >= 0 {
		q.Set("partition", strconv.Itoa(t.partition))
	}
	path := "/v1/topics/" + url.PathEscape(t.topic) + "/messages?" + q.Encode()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_, err := c.call(context.WithoutCancel(ctx), http.MethodPost, path, body, http.Header{"Content-Type": {"application/x-ndjson"}})
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
		b.spare = body // read by the target's next send, after busy
		<-c.slots
		<-b.busy
	}()
	return nil
}

// Flush sends every partial body and waits for every answer.
func (c *httpConn) Flush(ctx context.Context) error {
	c.mu.Lock()
	targets := make(map[httpTarget]*httpBody, len(c.bodies))
	for t, b := range c.bodies {
		targets[t] = b
	}
	c.mu.Unlock()
	for t, b := range targets {
		if err := c.send(ctx, t, b); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *httpConn) Close() error {
	c.wg.Wait()
	c.hc.CloseIdleConnections()
	return nil
}

// call makes one request and returns the answer's body; an error answer
// becomes a *wire.Error of its code.
func (c *httpConn) call(ctx context.Context, method, path string, body []byte, h http.Header) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.authz != "" {
		req.Header.Set("Authorization", c.authz)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, httpError(resp.StatusCode, out)
	}
	return out, nil
}

// httpError turns an error answer into the wire error of its kind, so
// that callers test it as they test a native client's.
func httpError(status int, body []byte) error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error.Message == "" {
		e.Error.Message = http.StatusText(status)
	}
	code, ok := map[string]wire.Code{"invalid": wire.CodeInvalidArgument, "unauthenticated": wire.CodeAuthFailed,
		"denied": wire.CodeNotAuthorized, "not_found": wire.CodeUnknownTopic, "exists": wire.CodeTopicExists,
		"too_large": wire.CodeMessageTooLarge, "out_of_range": wire.CodeOffsetOutOfRange,
		"exhausted": wire.CodeLimitExceeded, "unavailable": wire.CodeShuttingDown, "conflict": wire.CodeGroupActive}[e.Error.Code]
	if !ok {
		code = wire.CodeInternal
	}
	return wire.Errorf(code, fmt.Sprintf("http %d: %s", status, e.Error.Message))
}

func (c *httpConn) CreateTopic(ctx context.Context, name string, cfg client.TopicConfig) error {
	req := map[string]any{"name": name, "partitions": cfg.Partitions}
	conf := map[string]string{}
	if cfg.Storage != "" {
		conf["storage"] = cfg.Storage
	}
	if cfg.Fsync != "" {
		conf["fsync"] = cfg.Fsync
	}
	if cfg.MaxSubscribers > 0 {
		conf["max-subscribers"] = strconv.Itoa(cfg.MaxSubscribers)
	}
	if len(conf) > 0 {
		req["config"] = conf
	}
	body, _ := json.Marshal(req)
	_, err := c.call(ctx, http.MethodPost, "/v1/topics", body, http.Header{"Content-Type": {"application/json"}})
	return err
}

func (c *httpConn) DeleteTopic(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodDelete, "/v1/topics/"+url.PathEscape(name), nil, nil)
	return err
}

func (c *httpConn) DescribeTopic(ctx context.Context, name string) (client.TopicInfo, error) {
	body, err := c.call(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(name), nil, nil)
	if err != nil {
		return client.TopicInfo{}, err
	}
	var t struct {
		Name       string
		Config     map[string]string
		Defaults   map[string]string
		Partitions []struct {
			ID          int
			StartOffset int64 `json:"start_offset"`
			EndOffset   int64 `json:"end_offset"`
			Subscribers int
			Bytes       int64
			Segments    int
		}
	}
	if err := json.Unmarshal(body, &t); err != nil {
		return client.TopicInfo{}, fmt.Errorf("describe topic %s: %w", name, err)
	}
	info := client.TopicInfo{Name: t.Name, Config: t.Config, Defaults: t.Defaults}
	for _, p := range t.Partitions {
		info.Partitions = append(info.Partitions, client.PartitionInfo{ID: p.ID, StartOffset: p.StartOffset,
			EndOffset: p.EndOffset, Subscribers: p.Subscribers, Bytes: p.Bytes, Segments: p.Segments})
	}
	return info, nil
}

// subscribe follows the topic's event stream; it returns once the
// gateway answered, which it does once the broker took the
// subscriptions.
func (c *httpConn) subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	set := client.SettingsOf(opts...)
	q := url.Values{"encoding": {"base64"}, "from": {httpPosition(set.Start)}}
	if set.Partition >= 0 {
		q.Set("partition", strconv.Itoa(set.Partition))
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, c.base+"/v1/topics/"+url.PathEscape(topic)+"/stream?"+q.Encode(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if c.authz != "" {
		req.Header.Set("Authorization", c.authz)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return nil, httpError(resp.StatusCode, b)
	}
	s := &sseSub{cancel: cancel, done: make(chan struct{}), topic: topic}
	go s.read(resp.Body, h, set.BatchEnd)
	return s, nil
}

// httpPosition is a position as the stream's ?from= takes it.
func httpPosition(p client.Position) string {
	st := p.Start()
	switch st.Kind {
	case wire.StartEarliest:
		return "earliest"
	case wire.StartOffset:
		return strconv.FormatInt(st.Value, 10)
	case wire.StartTime:
		return time.Unix(0, st.Value).UTC().Format(time.RFC3339Nano)
	}
	return "latest"
}

// sseSub is a subscription over an event stream.
type sseSub struct {
	cancel context.CancelFunc
	done   chan struct{}
	topic  string
}

func (s *sseSub) Unsubscribe(context.Context) error {
	s.cancel()
	<-s.done
	return nil
}

func (s *sseSub) Done() <-chan struct{} { return s.done }

// read parses the stream's events into one reused Delivery.
func (s *sseSub) read(body io.ReadCloser, h func(*client.Delivery), batchEnd func()) {
	defer close(s.done)
	defer func() { _ = body.Close() }()
	br := bufio.NewReaderSize(body, 256<<10)
	var p fastjson.Parser
	d := &client.Delivery{Topic: s.topic}
	var val, key []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			// An event's end (a blank line) ends what the stream had at
			// hand when nothing more is buffered.
			if len(line) == 1 && batchEnd != nil && br.Buffered() == 0 {
				batchEnd()
			}
			continue
		}
		v, err := p.ParseBytes(data)
		if err != nil || v.Get("offset") == nil {
			continue // an "error" event's data, at the stream's end
		}
		d.Partition = int32(v.GetInt("partition"))
		d.Offset = v.GetInt64("offset")
		d.Timestamp = time.UnixMilli(v.GetInt64("timestamp"))
		val, _ = base64.StdEncoding.AppendDecode(val[:0], v.GetStringBytes("value"))
		d.Value = val
		d.Key = nil
		if k := v.GetStringBytes("key"); k != nil {
			key, _ = base64.StdEncoding.AppendDecode(key[:0], k)
			d.Key = key
		}
		h(d)
	}
}

var _ conn = (*httpConn)(nil)
