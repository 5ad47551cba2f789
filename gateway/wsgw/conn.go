package wsgw

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/valyala/bytebufferpool"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// conn is one WebSocket and its session.
//
// Goroutines: serve runs the read loop (commands are handled there, in
// order, but for publishes, which it queues for the publisher); the
// publisher publishes and answers; the session's reader runs the
// subscriptions' handlers, which write deliveries; a watcher ends the
// socket when the session or the gateway ends; one per subscription
// forgets it when it ends. Writes are serialized by wmu.
type conn struct {
	h    *Handler
	ws   *websocket.Conn
	cred gateway.Credentials
	sess *gateway.Session

	ctx    context.Context // ends when the socket is done
	cancel context.CancelFunc

	// wmu serializes writes so that one watchdog timer (stall) covers
	// the write in progress: it fires when a write stays blocked for
	// WriteTimeout, and cuts the client as a slow consumer.
	wmu   sync.Mutex
	stall *time.Timer

	closeOnce sync.Once
	closed    chan struct{} // closed once the socket's close has finished

	smu  sync.Mutex
	subs map[subKey]*subscription

	pub *publisher
	wg  sync.WaitGroup // the goroutines serve waits for
}

type subKey struct {
	topic     string
	partition int32
}

func newConn(h *Handler, ws *websocket.Conn, cred gateway.Credentials) *conn {
	c := &conn{h: h, ws: ws, cred: cred, closed: make(chan struct{}), subs: map[subKey]*subscription{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.stall = time.AfterFunc(time.Hour, c.stalled)
	c.stall.Stop()
	return c
}

var errSocketClosed = errors.New("wsgw: the WebSocket is closed")

// write sends one message, under the write watchdog.
func (c *conn) write(typ websocket.MessageType, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		return errSocketClosed
	}
	c.stall.Reset(c.h.cfg.WriteTimeout)
	err := c.ws.Write(background, typ, p)
	c.stall.Stop()
	return err
}

// stalled runs when a write stayed blocked for WriteTimeout.
func (c *conn) stalled() {
	c.h.metrics.slow.Add(1)
	c.h.log.Warn("websocket client is a slow consumer: a write stayed blocked", "remote", c.cred.Remote,
		"timeout", c.h.cfg.WriteTimeout)
	c.closeWith(CloseSlowConsumer, "slow consumer")
}

// closeWith closes the socket with code, once. The close handshake waits
// (up to the library's 5 s) for a blocked write to finish and for the
// client's answer, so it runs on its own goroutine; serve waits for it.
func (c *conn) closeWith(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.h.metrics.closedWith(code)
		go func() {
			defer close(c.closed)
			_ = c.ws.Close(code, reason)
			c.cancel()
		}()
	})
}

// serve runs the socket until it closes. sess is the session opened at
// the upgrade, or nil when the first command brings the credentials.
func (c *conn) serve(sess *gateway.Session) {
	m := c.h.g.Metrics()
	m.Streams(Via, 1)
	defer m.Streams(Via, -1)
	defer c.teardown()
	if sess == nil {
		var first *command
		if sess, first = c.authenticate(); sess == nil {
			return
		}
		c.sess = sess
		c.startSession()
		if first != nil {
			c.handle(first)
		}
	} else {
		c.sess = sess
		c.startSession()
	}
	for {
		cmd, err := c.read()
		if err != nil {
			return
		}
		c.handle(cmd)
	}
}

// startSession starts the publisher and the watcher of the session.
func (c *conn) startSession() {
	c.pub = newPublisher(c)
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.pub.run()
	}()
	go func() {
		defer c.wg.Done()
		c.watch()
	}()
}

// watch closes the socket when the session or the gateway ends.
func (c *conn) watch() {
	select {
	case <-c.ctx.Done():
	case <-c.h.g.Done():
		c.closeWith(CloseGoingAway, "the broker is shutting down")
	case <-c.sess.Done():
		code, reason := closeFor(c.sess.Err())
		c.closeWith(code, reason)
	}
}

// closeFor is the close code and reason for a session that ended with err.
func closeFor(err error) (websocket.StatusCode, string) {
	switch {
	case gateway.Code(err) == wire.CodeSlowConsumer:
		return CloseSlowConsumer, "slow consumer"
	case gateway.KindOf(err) == gateway.KindUnauthenticated:
		return CloseUnauthenticated, "authentication failed"
	case gateway.Code(err) == wire.CodeShuttingDown:
		return CloseGoingAway, "the broker is shutting down"
	case gateway.KindOf(err) == gateway.KindExhausted:
		return CloseTryAgainLater, reasonOf(err)
	}
	return CloseInternal, reasonOf(err)
}

// reasonOf is err's text cut to what a close frame holds (123 bytes).
func reasonOf(err error) string {
	s := "the session ended"
	if err != nil {
		s = err.Error()
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// authenticate waits for the first command of a client that presented no
// credentials at the upgrade, and opens the session: with the auth
// command's credentials, or with none for another command (which it
// returns, to be handled). It closes the socket and returns nil when that
// fails.
func (c *conn) authenticate() (*gateway.Session, *command) {
	timer := time.AfterFunc(c.h.cfg.AuthTimeout, func() {
		c.closeWith(CloseUnauthenticated, "no command within the auth timeout")
	})
	cmd, err := c.read()
	if !timer.Stop() || err != nil {
		if cmd != nil {
			c.done(cmd) // it came as the timeout closed the socket
		}
		return nil, nil
	}
	cred := c.cred
	if cmd.Op == wsproto.OpAuth {
		cred.Token, cred.User, cred.Password = cmd.Token, cmd.User, cmd.Password
	}
	sess, err := c.h.g.Dedicated(c.ctx, Via, cred)
	if cmd.Op == wsproto.OpAuth {
		c.h.g.Metrics().Request(Via, err)
	}
	if err != nil {
		switch gateway.KindOf(err) {
		case gateway.KindUnauthenticated:
			reason := "authentication failed"
			if cmd.Op != wsproto.OpAuth {
				reason = "authentication required: send an auth command first"
			}
			c.closeWith(CloseUnauthenticated, reason)
		case gateway.KindExhausted, gateway.KindUnavailable:
			c.closeWith(CloseTryAgainLater, reasonOf(err))
		default:
			c.closeWith(CloseInternal, reasonOf(err))
		}
		c.done(cmd)
		return nil, nil
	}
	if cmd.Op == wsproto.OpAuth {
		c.replyOK(cmd)
		c.done(cmd)
		return sess, nil
	}
	return sess, cmd
}

// teardown ends everything the socket started, and waits for it.
func (c *conn) teardown() {
	// The read loop has ended: the client closed, or a close of ours
	// finished or is under way (its close frame must get out before the
	// connection goes), or the connection failed. The close is bounded:
	// the library gives a blocked write and the client's answer 5 s each.
	// Then the socket is closed for good, which ends a write the
	// session's reader (running the subscriptions' handlers) or the
	// publisher may still be blocked in.
	c.closeWith(websocket.StatusNormalClosure, "")
	<-c.closed
	c.cancel()
	_ = c.ws.CloseNow()
	if c.pub != nil {
		c.pub.stop()
	}
	if c.sess != nil {
		_ = c.sess.Close()
	}
	c.wg.Wait()
	c.stall.Stop()
}

// read reads the next command. The frame's buffer goes with the command
// (its fields alias it); done returns it.
func (c *conn) read() (*command, error) {
	for {
		typ, r, err := c.ws.Reader(c.ctx)
		if err != nil {
			return nil, err
		}
		buf := bytebufferpool.Get()
		if _, err := buf.ReadFrom(r); err != nil {
			bytebufferpool.Put(buf)
			return nil, err
		}
		cmd := newCommand(buf, typ == websocket.MessageBinary)
		if err := cmd.decode(); err != nil {
			c.h.g.Metrics().Request(Via, err)
			c.replyError(cmd, err)
			c.done(cmd)
			continue
		}
		return cmd, nil
	}
}

// done releases a command and its frame.
func (c *conn) done(cmd *command) {
	bytebufferpool.Put(cmd.buf)
	cmd.release()
}

// handle runs one command on the read loop; a publish goes to the
// publisher, which answers it.
func (c *conn) handle(cmd *command) {
	if cmd.Op == wsproto.OpPublish {
		if err := c.pub.enqueue(cmd); err != nil {
			c.finish(cmd, err)
		}
		return
	}
	var err error
	switch cmd.Op {
	case wsproto.OpAuth:
		err = wire.Errorf(wire.CodeInvalidArgument, "auth must be the first command, and only when the upgrade carried no credentials")
	case wsproto.OpSubscribe:
		if err = c.subscribe(cmd); err == nil {
			return // answered
		}
	case wsproto.OpUnsubscribe:
		err = c.unsubscribe(cmd)
	case wsproto.OpCreateTopic:
		err = c.sess.CreateTopic(c.ctx, cmd.Topic, cmd.config)
	case wsproto.OpDeleteTopic:
		err = c.sess.DeleteTopic(c.ctx, cmd.Topic)
	case wsproto.OpDescribeTopic:
		var info client.TopicInfo
		if info, err = c.sess.DescribeTopic(c.ctx, cmd.Topic); err == nil {
			c.h.g.Metrics().Request(Via, nil)
			c.replyTopic(cmd, info)
			c.done(cmd)
			return
		}
	}
	c.finish(cmd, err)
}

// finish answers a command with ok or its error, counts it, and releases
// its frame.
func (c *conn) finish(cmd *command, err error) {
	c.h.g.Metrics().Request(Via, err)
	if err != nil {
		c.replyError(cmd, err)
	} else {
		c.replyOK(cmd)
	}
	c.done(cmd)
}

// subscription is one subscription of the socket. Its handler and
// batchEnd run on the session's reader: frame is theirs alone.
type subscription struct {
	c   *conn
	key subKey
	bin bool // deliveries in binary frames
	b64 bool // JSON deliveries with every record in base64
	s   *client.Subscription
	// ready is closed once the subscribe is answered: the first
	// delivery (a replay can come at once) waits for it, so that the
	// client has its answer first. The handler sets it to nil then.
	ready chan struct{}

	frame   []byte
	countAt int   // binary: where the frame's count goes
	n       int   // records in frame
	part    int32 // the frame's partition
}

func (c *conn) subscribe(cmd *command) error {
	k := subKey{cmd.Topic, cmd.Partition}
	c.smu.Lock()
	_, dup := c.subs[k]
	c.smu.Unlock()
	if dup {
		return wire.Errorf(wire.CodeAlreadySubscribed, "this socket already subscribes to "+subName(k))
	}
	s := &subscription{c: c, key: k, bin: cmd.bin, b64: cmd.b64, ready: make(chan struct{})}
	ready := s.ready
	opts := []client.SubscribeOption{client.StartAt(cmd.Start()), client.DispatchInline(), client.OnBatchEnd(s.batchEnd)}
	if k.partition >= 0 {
		opts = append(opts, client.FromPartition(int(k.partition)))
	}
	cs, err := c.sess.Subscribe(c.ctx, k.topic, s.deliver, opts...)
	if err != nil {
		return err
	}
	s.s = cs
	c.smu.Lock()
	c.subs[k] = s
	c.smu.Unlock()
	c.wg.Add(1)
	go s.watch()
	c.finish(cmd, nil)
	close(ready)
	return nil
}

func subName(k subKey) string {
	if k.partition < 0 {
		return k.topic
	}
	return fmt.Sprintf("%s partition %d", k.topic, k.partition)
}

func (c *conn) unsubscribe(cmd *command) error {
	k := subKey{cmd.Topic, cmd.Partition}
	c.smu.Lock()
	s := c.subs[k]
	delete(c.subs, k)
	c.smu.Unlock()
	if s == nil {
		return wire.Errorf(wire.CodeNotSubscribed, "this socket does not subscribe to "+subName(k))
	}
	return s.s.Unsubscribe(c.ctx)
}

// watch forgets the subscription when it ends: by the client's
// unsubscribe, or with the session (which closes the socket).
func (s *subscription) watch() {
	defer s.c.wg.Done()
	select {
	case <-s.s.Done():
	case <-s.c.ctx.Done():
		return
	}
	c := s.c
	c.smu.Lock()
	if c.subs[s.key] == s {
		delete(c.subs, s.key)
	}
	c.smu.Unlock()
}

// deliver adds one record to the frame being built.
func (s *subscription) deliver(d *client.Delivery) {
	if s.ready != nil {
		select {
		case <-s.ready:
		case <-s.c.ctx.Done():
		}
		s.ready = nil
	}
	if s.n > 0 && d.Partition != s.part {
		s.batchEnd()
	}
	if s.n == 0 {
		s.part = d.Partition
		if s.bin {
			s.frame, s.countAt = wsproto.AppendMessagesHead(s.frame[:0], s.key.topic, d.Partition)
		} else {
			s.frame = appendJSONMessagesHead(s.frame[:0], s.key.topic, d.Partition)
		}
	}
	ts := d.Timestamp.UnixNano()
	if s.bin {
		s.frame = wsproto.AppendDelivery(s.frame, d.Offset, ts, d.Key, d.Value, d.Headers)
	} else {
		s.frame = appendJSONRecord(s.frame, s.n > 0, d, s.b64)
	}
	s.n++
}

// maxKeptFrame bounds the frame buffer a subscription keeps between
// batches; a larger one (a batch of large messages) is dropped after use.
const maxKeptFrame = 1 << 20

// batchEnd writes the frame: one WebSocket message per broker batch.
func (s *subscription) batchEnd() {
	if s.n == 0 {
		return
	}
	typ := websocket.MessageText
	if s.bin {
		wsproto.SetCount(s.frame, s.countAt, s.n)
		typ = websocket.MessageBinary
	} else {
		s.frame = append(s.frame, "]}"...)
	}
	n := s.n
	s.n = 0
	if err := s.c.write(typ, s.frame); err == nil {
		s.c.h.g.Metrics().Delivered(Via, n)
		s.c.h.metrics.frames.Add(1)
	}
	if cap(s.frame) > maxKeptFrame {
		s.frame = nil
	}
}
