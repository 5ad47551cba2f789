package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
)

// The WebSocket gateway's protocol (docs/WEBSOCKET.md), binary frames:
// Config.Server is the broker's HTTP listener (host:port, or a ws:// or
// wss:// URL), and every producer and subscriber has a WebSocket of its
// own.
func init() { registerProtocol("ws", dialWS) }

// wsInflight bounds the publish frames a producer has sent and not had
// answered; a publish waits for room past it.
const wsInflight = 8

// wsConn is one WebSocket. Publishes accumulate into one frame, which is
// sent at once when nothing is in flight, and otherwise when it reaches
// the batch size or the last answer comes back: at a low rate every
// message goes out at once, at a high one frames fill while acks are on
// their way. A writer goroutine sends the frames (the reader must never
// block on a write, or the acks that would free it go unread); the
// reader takes the answers and runs the subscriptions' handlers.
type wsConn struct {
	ws         *websocket.Conn
	batchBytes int
	ctx        context.Context
	cancel     context.CancelFunc

	mu       sync.Mutex
	frame    []byte // the publish frame being filled
	countAt  int
	n        int
	topic    string
	part     int32
	inflight int
	err      error         // the first failed publish since the last Flush
	changed  chan struct{} // closed and replaced when inflight or frame changes
	free     [][]byte      // sent frames' buffers, for reuse

	out    chan []byte // sealed frames for the writer
	nextID atomic.Uint32

	cmu   sync.Mutex
	calls map[uint32]chan wsproto.Reply
	subs  map[wsSubKey]*wsSub

	done chan struct{} // closed when the reader ends
	rerr error         // why it ended
}

type wsSubKey struct {
	topic string
	part  int32
}

type wsSub struct {
	c        *wsConn
	key      wsSubKey
	h        func(*client.Delivery)
	batchEnd func()
	d        client.Delivery // reused for every delivery
	done     chan struct{}
	once     sync.Once
}

func (s *wsSub) end() { s.once.Do(func() { close(s.done) }) }

// wsURL is the WebSocket address of a server given as host:port or URL.
func wsURL(server string, tls bool) string {
	if strings.Contains(server, "://") {
		return server
	}
	if tls {
		return "wss://" + server + "/v1/ws"
	}
	return "ws://" + server + "/v1/ws"
}

func dialWS(ctx context.Context, cfg *Config, _ []client.Option) (conn, error) {
	opts := &websocket.DialOptions{Subprotocols: []string{"ratatoskr.v1"}, HTTPHeader: http.Header{}}
	switch {
	case cfg.User != "":
		opts.HTTPHeader.Set("Authorization", "Basic "+basicAuth(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts.HTTPHeader.Set("Authorization", "Bearer "+cfg.Token)
	}
	if cfg.TLS != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.TLS}}
	}
	ws, resp, err := websocket.Dial(ctx, wsURL(cfg.Server, cfg.TLS != nil), opts)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("loadtest: websocket %s: %w", cfg.Server, err)
	}
	ws.SetReadLimit(-1)
	c := &wsConn{ws: ws, batchBytes: max(cfg.BatchBytes, 4096), changed: make(chan struct{}),
		out: make(chan []byte, wsInflight+1), calls: map[uint32]chan wsproto.Reply{}, subs: map[wsSubKey]*wsSub{},
		done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.writer()
	go c.reader()
	return c, nil
}

func basicAuth(user, password string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	r.SetBasicAuth(user, password)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// signal wakes everyone waiting for a change. Under mu.
func (c *wsConn) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// wait waits for a change. Under mu; it unlocks while waiting.
func (c *wsConn) wait(ctx context.Context) error {
	ch := c.changed
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.closedErr()
	}
}

func (c *wsConn) closedErr() error {
	select {
	case <-c.done:
		if c.rerr != nil {
			return fmt.Errorf("loadtest: websocket closed: %w", c.rerr)
		}
		return errors.New("loadtest: websocket closed")
	default:
		return nil
	}
}

// seal sends the frame being filled, waiting for room in flight. Under mu.
func (c *wsConn) seal(ctx context.Context) error {
	for c.inflight >= wsInflight {
		if err := c.wait(ctx); err != nil {
			return err
		}
	}
	if c.n == 0 {
		return nil
	}
	wsproto.SetCount(c.frame, c.countAt, c.n)
	c.out <- c.frame // room: at most wsInflight frames are in flight
	c.inflight++
	c.frame, c.n = nil, 0
	if k := len(c.free); k > 0 {
		c.frame, c.free = c.free[k-1][:0], c.free[:k-1]
	}
	return nil
}

func (c *wsConn) PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error {
	return c.PublishBatchAsync(ctx, topic, []client.Message{msg}, opts...)
}

func (c *wsConn) PublishBatchAsync(ctx context.Context, topic string, msgs []client.Message, opts ...client.PublishOption) error {
	part := wsproto.PartitionAny
	for _, o := range opts {
		if p, ok := o.Partition(); ok {
			part = int32(p)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.closedErr(); err != nil {
		return err
	}
	if c.n > 0 && (c.topic != topic || c.part != part) {
		if err := c.seal(ctx); err != nil {
			return err
		}
	}
	for i := range msgs {
		if c.n == 0 {
			c.topic, c.part = topic, part
			c.frame, c.countAt = wsproto.AppendPublishHead(c.frame[:0], c.nextID.Add(1), topic, part)
		}
		c.frame = wsproto.AppendRecord(c.frame, &msgs[i])
		c.n++
		if len(c.frame) >= c.batchBytes {
			if err := c.seal(ctx); err != nil {
				return err
			}
		}
	}
	if c.n > 0 && c.inflight == 0 {
		return c.seal(ctx)
	}
	return nil
}

// Flush sends what is pending and waits for every answer; it returns the
// first publish that failed since the last Flush.
func (c *wsConn) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.seal(ctx); err != nil {
		return err
	}
	for c.inflight > 0 {
		if err := c.wait(ctx); err != nil {
			return err
		}
	}
	err := c.err
	c.err = nil
	return err
}

func (c *wsConn) Close() error {
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	c.cancel()
	<-c.done
	return err
}

// writer sends the sealed publish frames.
func (c *wsConn) writer() {
	for {
		select {
		case f := <-c.out:
			if err := c.ws.Write(c.ctx, websocket.MessageBinary, f); err != nil {
				_ = c.ws.CloseNow()
				return
			}
			c.mu.Lock()
			if len(c.free) < wsInflight {
				c.free = append(c.free, f)
			}
			c.mu.Unlock()
		case <-c.ctx.Done():
			return
		}
	}
}

// reader takes answers and deliveries until the socket ends.
func (c *wsConn) reader() {
	var buf bytes.Buffer
	var rep wsproto.Reply
	defer func() {
		c.cancel()
		c.cmu.Lock()
		for _, s := range c.subs {
			s.end()
		}
		c.cmu.Unlock()
		close(c.done)
	}()
	for {
		_, r, err := c.ws.Reader(c.ctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err == nil {
			err = wsproto.DecodeReply(buf.Bytes(), &rep)
		}
		if err != nil {
			c.rerr = err
			return
		}
		c.dispatch(&rep)
	}
}

func (c *wsConn) dispatch(rep *wsproto.Reply) {
	switch rep.Op {
	case wsproto.OpMessages:
		c.cmu.Lock()
		s := c.subs[wsSubKey{rep.Topic, rep.Partition}]
		if s == nil {
			s = c.subs[wsSubKey{rep.Topic, wsproto.PartitionAny}]
		}
		c.cmu.Unlock()
		if s == nil {
			return
		}
		for rep.Next(&s.d) {
			s.h(&s.d)
		}
		if s.batchEnd != nil {
			s.batchEnd()
		}
	default:
		c.cmu.Lock()
		ch := c.calls[rep.ID]
		delete(c.calls, rep.ID)
		c.cmu.Unlock()
		if ch != nil {
			r := *rep
			r.JSON = bytes.Clone(rep.JSON)
			r.Runs = nil
			ch <- r
			return
		}
		c.mu.Lock()
		c.inflight--
		if rep.Op == wsproto.OpError && c.err == nil {
			c.err = rep.Err()
		}
		if c.inflight == 0 && c.n > 0 {
			_ = c.seal(context.Background()) // room: nothing is in flight
		}
		c.signal()
		c.mu.Unlock()
	}
}

// call sends a command built by build (given its id) and waits for its answer.
func (c *wsConn) call(ctx context.Context, build func(id uint32) []byte) (wsproto.Reply, error) {
	id := c.nextID.Add(1)
	ch := make(chan wsproto.Reply, 1)
	c.cmu.Lock()
	c.calls[id] = ch
	c.cmu.Unlock()
	if err := c.ws.Write(ctx, websocket.MessageBinary, build(id)); err != nil {
		c.cmu.Lock()
		delete(c.calls, id)
		c.cmu.Unlock()
		return wsproto.Reply{}, err
	}
	select {
	case r := <-ch:
		if r.Op == wsproto.OpError {
			return r, r.Err()
		}
		return r, nil
	case <-ctx.Done():
		return wsproto.Reply{}, ctx.Err()
	case <-c.done:
		return wsproto.Reply{}, c.closedErr()
	}
}

func (c *wsConn) subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	set := client.SettingsOf(opts...)
	s := &wsSub{c: c, key: wsSubKey{topic, int32(set.Partition)}, h: h, batchEnd: set.BatchEnd, done: make(chan struct{})}
	// Deliveries are handled on the reader, as DispatchInline does: the
	// handler is registered before the subscribe goes out, so that none
	// arrives with nobody to take it.
	c.cmu.Lock()
	c.subs[s.key] = s
	c.cmu.Unlock()
	_, err := c.call(ctx, func(id uint32) []byte {
		return wsproto.AppendSubscribe(nil, id, topic, s.key.part, set.Start.Start())
	})
	if err != nil {
		c.cmu.Lock()
		delete(c.subs, s.key)
		c.cmu.Unlock()
		return nil, err
	}
	return s, nil
}

func (s *wsSub) Done() <-chan struct{} { return s.done }

func (s *wsSub) Unsubscribe(ctx context.Context) error {
	c := s.c
	_, err := c.call(ctx, func(id uint32) []byte {
		return wsproto.AppendTopicCommand(nil, wsproto.OpUnsubscribe, id, s.key.topic, s.key.part)
	})
	c.cmu.Lock()
	if c.subs[s.key] == s {
		delete(c.subs, s.key)
	}
	c.cmu.Unlock()
	s.end()
	return err
}

func (c *wsConn) CreateTopic(ctx context.Context, name string, cfg client.TopicConfig) error {
	doc, err := json.Marshal(wsproto.ConfigDoc(cfg))
	if err != nil {
		return err
	}
	_, err = c.call(ctx, func(id uint32) []byte { return wsproto.AppendCreateTopic(nil, id, name, doc) })
	return err
}

func (c *wsConn) DeleteTopic(ctx context.Context, name string) error {
	_, err := c.call(ctx, func(id uint32) []byte {
		return wsproto.AppendTopicCommand(nil, wsproto.OpDeleteTopic, id, name, 0)
	})
	return err
}

func (c *wsConn) DescribeTopic(ctx context.Context, name string) (client.TopicInfo, error) {
	r, err := c.call(ctx, func(id uint32) []byte {
		return wsproto.AppendTopicCommand(nil, wsproto.OpDescribeTopic, id, name, 0)
	})
	if err != nil {
		return client.TopicInfo{}, err
	}
	var doc wsproto.TopicDoc
	if err := json.Unmarshal(r.JSON, &doc); err != nil {
		return client.TopicInfo{}, fmt.Errorf("loadtest: describe topic %s: %w", name, err)
	}
	return doc.Info(), nil
}
