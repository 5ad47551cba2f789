package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// restartable is a broker that a test stops and starts again on the same
// address and data directory.
type restartable struct {
	t    *testing.T
	dir  string
	addr string
	e    *engine.Engine
	cfg  func(*engine.Config)
}

func newRestartable(t *testing.T, mutate func(*engine.Config)) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), addr: "127.0.0.1:0", cfg: mutate}
	r.start()
	r.addr = r.e.Addr().String()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	e, err := startEngine(r.dir, func(c *engine.Config) {
		c.Addr = r.addr
		if r.cfg != nil {
			r.cfg(c)
		}
	})
	require.NoError(r.t, err)
	r.e = e
}

func (r *restartable) stop() {
	if r.e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = r.e.Shutdown(ctx)
	r.e = nil
}

func (r *restartable) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

// proxy forwards connections to a broker and can cut them all, or stop
// passing what the broker sends, so that a test loses a connection while
// the broker runs on.
type proxy struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	muted atomic.Bool
	// dropping loses what clients send instead of passing it on.
	dropping atomic.Bool
	sent     atomic.Int64 // bytes passed from clients to the broker
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, to: to}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.to)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.copyOut(out, in); _ = out.Close() }()
		go func() { defer p.wg.Done(); p.copyBack(in, out); _ = in.Close() }()
	}
}

// awaitSent waits until the clients sent more than n bytes through p.
func (p *proxy) awaitSent(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return p.sent.Load() > n }, 30*time.Second, time.Millisecond)
}

// copyOut passes what the client sends, unless dropping: then it is lost
// on the way, as if the broker had died before reading it.
func (p *proxy) copyOut(out, in net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := in.Read(buf)
		p.sent.Add(int64(n))
		if n > 0 && !p.dropping.Load() {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyBack passes what the broker sends, unless muted.
func (p *proxy) copyBack(in, out net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := out.Read(buf)
		if n > 0 && !p.muted.Load() {
			if _, werr := in.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every connection made so far.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// states records what a state handler is told.
type states struct {
	mu   sync.Mutex
	seen []client.State
	ch   chan client.State
}

func newStates() *states { return &states{ch: make(chan client.State, 64)} }

func (s *states) handler(st client.State, _ error) {
	s.mu.Lock()
	s.seen = append(s.seen, st)
	s.mu.Unlock()
	s.ch <- st
}

// await waits until the handler is told st.
func (s *states) await(t *testing.T, st client.State) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-s.ch:
			if got == st {
				return
			}
		case <-timeout:
			t.Fatalf("no %s state within 30s", st)
		}
	}
}

func (s *states) list() []client.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]client.State(nil), s.seen...)
}

// received collects deliveries per partition.
type received struct {
	mu     sync.Mutex
	byPart map[int32][]int64
	values map[string]int
	missed []int64
	n      int
	more   chan struct{}
}

func newReceived() *received {
	return &received{byPart: map[int32][]int64{}, values: map[string]int{}, more: make(chan struct{}, 1)}
}

func (r *received) handle(d *client.Delivery) {
	r.mu.Lock()
	r.byPart[d.Partition] = append(r.byPart[d.Partition], d.Offset)
	r.values[string(d.Value)]++
	if d.Missed != 0 {
		r.missed = append(r.missed, d.Missed)
	}
	r.n++
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// await waits until n deliveries arrived.
func (r *received) await(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		r.mu.Lock()
		got := r.n
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.more:
		case <-timeout:
			t.Fatalf("%d deliveries of %d within 60s", got, n)
		}
	}
}

// awaitDistinct waits until n different values arrived.
func (r *received) awaitDistinct(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		r.mu.Lock()
		got := len(r.values)
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.more:
		case <-timeout:
			t.Fatalf("%d different values of %d within 60s", got, n)
		}
	}
}

// checkContiguous asserts that every partition's offsets run from its
// first with no gap and no repeat, and that no value came twice.
func (r *received) checkContiguous(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, offs := range r.byPart {
		for i := 1; i < len(offs); i++ {
			require.Equal(t, offs[i-1]+1, offs[i], "partition %d: offset %d follows %d", p, offs[i], offs[i-1])
		}
	}
	for v, n := range r.values {
		require.Equal(t, 1, n, "value %q delivered %d times", v, n)
	}
}

// A broker restart under a subscriber, a producer and a group member: all
// three carry on, and the durable subscriber sees no gap and no duplicate.
func TestBrokerRestartUnderSubscriberProducerAndGroup(t *testing.T) {
	b := newRestartable(t, nil)
	ctx := ctxT(t)
	subStates, pubStates, groupStates := newStates(), newStates(), newStates()
	admin := dialT(t, b.addr, client.WithoutReconnect())
	require.NoError(t, admin.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 3, Storage: "disk"}))
	require.NoError(t, admin.Close())

	sc := dialT(t, b.addr, client.WithStateHandler(subStates.handler), client.WithReconnect(10*time.Millisecond, 200*time.Millisecond))
	got := newReceived()
	sub, err := sc.Subscribe(ctx, "orders", got.handle)
	require.NoError(t, err)

	groupGot := newReceived()
	g, err := client.JoinGroup(ctx, b.addr, client.GroupConfig{Group: "billing", Topic: "orders", Start: client.Earliest,
		AutoCommitInterval: 20 * time.Millisecond,
		Handler:            func(m *client.GroupMessage) error { groupGot.handle(&m.Delivery); return nil }},
		client.WithStateHandler(groupStates.handler), client.WithReconnect(10*time.Millisecond, 200*time.Millisecond))
	require.NoError(t, err)
	defer func() { require.NoError(t, g.Close()) }()

	pc := dialT(t, b.addr, client.WithStateHandler(pubStates.handler), client.WithReconnect(10*time.Millisecond, 200*time.Millisecond))
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			_, err := pc.Publish(ctx, "orders", client.Message{Key: []byte(strconv.Itoa(i % 7)), Value: []byte("m" + strconv.Itoa(i))})
			require.NoError(t, err)
		}
	}
	publish(0, 300)
	got.await(t, 300)

	b.restart()
	subStates.await(t, client.StateReconnected)
	pubStates.await(t, client.StateReconnected)
	groupStates.await(t, client.StateReconnected)
	publish(300, 600)
	got.await(t, 600)
	got.checkContiguous(t)
	require.Len(t, got.values, 600)
	require.Zero(t, sub.Missed())
	// The group member carries on too; offset commits make its replay at
	// most what was handled after the last commit, so it sees every
	// message at least once.
	groupGot.awaitDistinct(t, 600)
	require.Equal(t, []client.State{client.StateConnected, client.StateDisconnected, client.StateReconnected}, subStates.list())
	require.NoError(t, sc.Close())
	require.Equal(t, client.StateClosed, subStates.list()[3])
}

// Messages published while a subscriber's connection is down are
// delivered after it reconnects, from the broker's log: with no gap on a
// durable topic, and, while the broker runs on, on a memory topic too.
func TestReconnectResumesFromTheLog(t *testing.T) {
	for _, storage := range []string{"disk", "memory"} {
		t.Run(storage, func(t *testing.T) {
			b := newRestartable(t, nil)
			ctx := ctxT(t)
			pc := dialT(t, b.addr)
			require.NoError(t, pc.CreateTopic(ctx, "r", client.TopicConfig{Partitions: 2, Storage: storage}))
			p := newProxy(t, b.addr)
			st := newStates()
			sc := dialT(t, p.addr(), client.WithStateHandler(st.handler), client.WithReconnect(10*time.Millisecond, 100*time.Millisecond))
			got := newReceived()
			sub, err := sc.Subscribe(ctx, "r", got.handle)
			require.NoError(t, err)
			for i := range 100 {
				_, err := pc.Publish(ctx, "r", client.Message{Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
				require.NoError(t, err)
			}
			got.await(t, 100)
			// Hold what the broker sends, publish more, then cut: the
			// subscriber lost those deliveries with its connection.
			p.muted.Store(true)
			for i := 100; i < 200; i++ {
				_, err := pc.Publish(ctx, "r", client.Message{Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
				require.NoError(t, err)
			}
			p.cut()
			p.muted.Store(false)
			st.await(t, client.StateReconnected)
			for i := 200; i < 250; i++ {
				_, err := pc.Publish(ctx, "r", client.Message{Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
				require.NoError(t, err)
			}
			got.await(t, 250)
			got.checkContiguous(t)
			require.Len(t, got.values, 250)
			require.Zero(t, sub.Missed())
			require.Empty(t, got.missed)
		})
	}
}

// After a restart a memory topic's offsets start again: the subscriber
// resumes at the live tail and its next delivery says that an unknown
// number of messages may have been missed.
func TestReconnectToRestartedMemoryTopicReportsMissed(t *testing.T) {
	b := newRestartable(t, nil)
	ctx := ctxT(t)
	st := newStates()
	sc := dialT(t, b.addr, client.WithStateHandler(st.handler), client.WithReconnect(10*time.Millisecond, 100*time.Millisecond))
	pc := dialT(t, b.addr, client.WithoutReconnect())
	require.NoError(t, pc.CreateTopic(ctx, "mem", client.TopicConfig{Storage: "memory"}))
	got := newReceived()
	_, err := sc.Subscribe(ctx, "mem", got.handle, client.FromPartition(0))
	require.NoError(t, err)
	for i := range 10 {
		_, err := pc.Publish(ctx, "mem", client.Message{Value: []byte("a" + strconv.Itoa(i))}, client.ToPartition(0))
		require.NoError(t, err)
	}
	got.await(t, 10)
	require.NoError(t, pc.Close())

	b.cfg = func(c *engine.Config) { c.DefaultStorage = "memory" }
	b.restart()
	st.await(t, client.StateReconnected)
	pc = dialT(t, b.addr, client.WithoutReconnect())
	// The resubscription is on its way when the client says it
	// reconnected; at the live tail, what is published before it is in
	// place is not delivered.
	require.Eventually(t, func() bool {
		info, err := pc.DescribeTopic(ctx, "mem")
		return err == nil && info.Partitions[0].Subscribers == 1
	}, 60*time.Second, 5*time.Millisecond)
	_, err = pc.Publish(ctx, "mem", client.Message{Value: []byte("after")}, client.ToPartition(0))
	require.NoError(t, err)
	got.await(t, 11)
	got.mu.Lock()
	defer got.mu.Unlock()
	require.Equal(t, []int64{-1}, got.missed)
	require.Equal(t, int64(0), got.byPart[0][10], "the new run's offsets start at 0")
}

// Calls in flight when the connection is lost fail with a retryable
// error; a publish made while the client reconnects waits and succeeds.
func TestReconnectFailsCallsInFlight(t *testing.T) {
	b := newRestartable(t, nil)
	ctx := ctxT(t)
	p := newProxy(t, b.addr)
	st := newStates()
	c := dialT(t, p.addr(), client.WithStateHandler(st.handler), client.WithReconnect(10*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, c.CreateTopic(ctx, "f", client.TopicConfig{}))
	fetched := make(chan error, 1)
	before := p.sent.Load()
	go func() {
		_, err := c.Fetch(ctx, "f", 0, client.Latest, client.MaxWait(20*time.Second))
		fetched <- err
	}()
	// The long poll went to the broker: cut the connection.
	p.awaitSent(t, before)
	p.cut()
	err := <-fetched
	require.ErrorIs(t, err, client.ErrConnectionLost)
	require.True(t, client.IsRetryable(err))
	st.await(t, client.StateReconnected)
	ack, err := c.Publish(ctx, "f", client.Message{Value: []byte("after")})
	require.NoError(t, err)
	require.Equal(t, int64(0), ack.Offset)
}

// A publish written to a connection that is lost before its ack fails
// with a retryable error that says it may have been stored, unless the
// client is idempotent; it never hangs.
func TestReconnectFailsUnackedPublishes(t *testing.T) {
	b := newRestartable(t, nil)
	ctx := ctxT(t)
	p := newProxy(t, b.addr)
	c := dialT(t, p.addr(), client.WithReconnect(10*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, c.CreateTopic(ctx, "u", client.TopicConfig{}))
	p.muted.Store(true) // the broker's acks go nowhere
	done := make(chan error, 1)
	before := p.sent.Load()
	go func() {
		_, err := c.Publish(ctx, "u", client.Message{Value: []byte("x")})
		done <- err
	}()
	p.awaitSent(t, before)
	p.cut()
	p.muted.Store(false)
	err := <-done
	require.ErrorIs(t, err, client.ErrConnectionLost)
	require.True(t, client.IsRetryable(err))
	require.True(t, client.MayHaveBeenStored(err))
	// The client carries on over a new connection.
	_, err = c.Publish(ctx, "u", client.Message{Value: []byte("y")})
	require.NoError(t, err)
}

// A client given several addresses fails over to the next; one given up
// reconnecting stops, and says so.
func TestReconnectAddressesAndAttempts(t *testing.T) {
	a := newRestartable(t, nil)
	b := newRestartable(t, nil)
	ctx := ctxT(t)
	st := newStates()
	c := dialT(t, "127.0.0.1:1, "+a.addr, client.WithServers(b.addr), client.WithStateHandler(st.handler),
		client.WithReconnect(5*time.Millisecond, 20*time.Millisecond), client.WithReconnectAttempts(50))
	_, err := c.Publish(ctx, "x", client.Message{Value: []byte("on a")})
	require.NoError(t, err)
	a.stop()
	st.await(t, client.StateReconnected)
	_, err = c.Publish(ctx, "x", client.Message{Value: []byte("on b")})
	require.NoError(t, err)
	bc := dialT(t, b.addr, client.WithoutReconnect())
	info, err := bc.DescribeTopic(ctx, "x")
	require.NoError(t, err)
	require.NoError(t, bc.Close())
	require.Equal(t, int64(1), info.Partitions[0].EndOffset, "the second message went to b")

	b.stop()
	st.await(t, client.StateClosed)
	<-c.Done()
	require.ErrorIs(t, c.Err(), client.ErrConnectionLost)
	require.ErrorContains(t, c.Err(), "gave up after 50 attempts")
	_, err = c.Publish(ctx, "x", client.Message{Value: []byte("none")})
	require.ErrorIs(t, err, client.ErrConnectionLost)
}

func TestWithoutReconnectStopsOnLoss(t *testing.T) {
	b := newRestartable(t, nil)
	c := dialT(t, b.addr, client.WithoutReconnect())
	b.stop()
	<-c.Done()
	require.True(t, errors.Is(c.Err(), client.ErrConnectionLost))
}

// TestIdempotentProducerThroughRepeatedCuts: connections lose what the
// client sends for a while and are then cut, again and again, under two
// goroutines publishing small batches asynchronously, with the broker
// running on. So batches written to a connection never reach the broker,
// and later ones of the same partitions are queued while the client
// reconnects. No publish fails (a later batch of a partition sent on the
// new connection before an earlier one the broker never got is refused
// with OUT_OF_ORDER_SEQUENCE, which is how a writer slipping in before the
// resends were queued showed), and every message is stored exactly once.
func TestIdempotentProducerThroughRepeatedCuts(t *testing.T) {
	ctx := ctxT(t)
	admin := dialT(t, brokerAddr)
	topic := fmt.Sprintf("cuts-%d", time.Now().UnixNano())
	require.NoError(t, admin.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 3}))
	p := newProxy(t, brokerAddr)
	var (
		mu     sync.Mutex
		failed []error
	)
	c := dialT(t, p.addr(), client.WithIdempotence(), client.WithBatchBytes(512),
		client.WithReconnect(time.Millisecond, 5*time.Millisecond),
		client.WithStateHandler(func(client.State, error) {}),
		client.WithErrorHandler(func(err error) { mu.Lock(); failed = append(failed, err); mu.Unlock() }))
	var (
		stop atomic.Bool
		sent [2]int
		wg   sync.WaitGroup
	)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				v := fmt.Sprintf("g%d-%d", g, i)
				if err := c.PublishAsync(ctx, topic, client.Message{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(v)}); err != nil {
					mu.Lock()
					failed = append(failed, fmt.Errorf("%s: %w", v, err))
					mu.Unlock()
					return
				}
				sent[g] = i + 1
			}
		}()
	}
	for range 20 {
		p.awaitSent(t, p.sent.Load()+4000)
		p.dropping.Store(true)
		p.awaitSent(t, p.sent.Load()+2000)
		p.cut()
		p.dropping.Store(false)
	}
	stop.Store(true)
	wg.Wait()
	require.NoError(t, c.Flush(ctx))
	mu.Lock()
	require.Empty(t, failed, "every publish survives the cuts")
	mu.Unlock()
	seen := map[string]bool{}
	for part := range 3 {
		for _, d := range fetchAllT(t, admin, topic, part) {
			v := string(d.Value)
			require.False(t, seen[v], "%s stored twice", v)
			seen[v] = true
		}
	}
	for g, n := range sent {
		for i := range n {
			require.True(t, seen[fmt.Sprintf("g%d-%d", g, i)], "g%d-%d stored", g, i)
		}
	}
}

// TestDialRetriesUntilTheBrokerComes: with WithRetryOnFailedConnect, Dial
// keeps trying an address where nothing serves yet (here a listener that
// hangs up at once, so the attempts can be counted) and connects once a
// broker starts there; without it, and when ctx ends first, Dial fails.
func TestDialRetriesUntilTheBrokerComes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	attempts := make(chan struct{}, 1000)
	hangups := make(chan struct{})
	go func() {
		defer close(hangups)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
			attempts <- struct{}{}
		}
	}()
	_, err = client.Dial(ctxT(t), addr, client.WithReconnect(time.Millisecond, 5*time.Millisecond))
	require.Error(t, err, "without the option one round of attempts")
	<-attempts

	short, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	defer cancel()
	_, err = client.Dial(short, addr, client.WithRetryOnFailedConnect(), client.WithReconnect(time.Millisecond, 5*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded, "ctx ends the retries")
	for len(attempts) > 0 {
		<-attempts
	}

	type dialed struct {
		c   *client.Client
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, err := client.Dial(ctxT(t), addr, client.WithRetryOnFailedConnect(), client.WithReconnect(time.Millisecond, 5*time.Millisecond))
		done <- dialed{c, err}
	}()
	<-attempts
	<-attempts // it tried twice, and goes on
	require.NoError(t, ln.Close())
	<-hangups
	dir := t.TempDir()
	e, err := startEngine(dir, func(c *engine.Config) { c.Addr = addr })
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	d := <-done
	require.NoError(t, d.err)
	t.Cleanup(func() { _ = d.c.Close() })
	_, err = d.c.Publish(ctxT(t), "late-broker", client.Message{Value: []byte("hello")})
	require.NoError(t, err)
}
