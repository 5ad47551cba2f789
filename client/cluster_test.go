package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeCluster is a few brokers that share one log per partition and agree
// on which of them leads each partition, as a test sets it: enough to
// watch a Cluster route, follow NOT_LEADER answers and retry. A node that
// does not lead a partition refuses publishes and fetches of it with
// NOT_LEADER naming the leader (or none); the leader stores a publish in
// the shared log, and answers an idempotent batch it has stored before
// with the original's offsets, as a cluster's replicas do.
type fakeCluster struct {
	t     *testing.T
	parts int
	nodes []*fakeNode

	mu      sync.Mutex
	leaders []int             // by partition: the leading node's index, -1 for none
	logs    [][]string        // by partition: the values stored, at their offsets
	stored  map[fakeSeq]int64 // idempotent batches stored: their base offset
	held    map[int][]heldPub // by node: publishes it holds unanswered (hold)
	holding map[int]bool      // nodes that hold publishes instead of answering
	refused chan int          // a node refused a publish or fetch (its index)
	pid     int64
}

type fakeSeq struct {
	id   int64
	part int32
	seq  int32
}

type heldPub struct {
	conn  *fakeConn
	corr  uint32
	part  int32
	batch wire.Batch
}

type fakeNode struct {
	fc   *fakeCluster
	idx  int
	ln   net.Listener
	addr string
	mu   sync.Mutex
	cs   []*fakeConn
	wg   sync.WaitGroup
}

type fakeConn struct {
	net.Conn
	wmu sync.Mutex
}

func (c *fakeConn) send(frame []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.Write(frame)
}

func newFakeCluster(t *testing.T, nodes, parts int) *fakeCluster {
	fc := &fakeCluster{t: t, parts: parts, leaders: make([]int, parts), logs: make([][]string, parts),
		stored: map[fakeSeq]int64{}, held: map[int][]heldPub{}, holding: map[int]bool{},
		refused: make(chan int, 1<<16)}
	for p := range parts {
		fc.leaders[p] = p % nodes
	}
	for i := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		n := &fakeNode{fc: fc, idx: i, ln: ln, addr: ln.Addr().String()}
		fc.nodes = append(fc.nodes, n)
		n.wg.Add(1)
		go n.accept()
	}
	t.Cleanup(func() {
		for _, n := range fc.nodes {
			n.stop()
		}
	})
	return fc
}

func (n *fakeNode) accept() {
	defer n.wg.Done()
	for {
		conn, err := n.ln.Accept()
		if err != nil {
			return
		}
		c := &fakeConn{Conn: conn}
		n.mu.Lock()
		n.cs = append(n.cs, c)
		n.mu.Unlock()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.serve(c)
		}()
	}
}

// cut closes the node's connections; it keeps accepting new ones.
func (n *fakeNode) cut() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.cs {
		_ = c.Close()
	}
	n.cs = nil
}

// stop closes the listener and every connection, as a node that died.
func (n *fakeNode) stop() {
	_ = n.ln.Close()
	n.cut()
	n.wg.Wait()
}

func (n *fakeNode) serve(c *fakeConn) {
	r := bufio.NewReader(c)
	for {
		h, body, err := readTestFrame(r)
		if err != nil {
			return
		}
		n.handle(c, h, body)
	}
}

// readTestFrame reads one frame for the tests' fake brokers: its header
// and body.
func readTestFrame(r *bufio.Reader) (wire.Header, []byte, error) {
	var hdr [wire.HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return wire.Header{}, nil, err
	}
	h, err := wire.ParseHeader(hdr[:], 1<<30)
	if err != nil {
		return h, nil, err
	}
	body := make([]byte, h.Length-wire.HeaderSize)
	_, err = io.ReadFull(r, body)
	return h, body, err
}

func (n *fakeNode) handle(c *fakeConn, h wire.Header, body []byte) {
	fc := n.fc
	switch h.Type {
	case wire.TypeHello:
		ok := wire.HelloOK{Version: wire.Version, MaxFrameBytes: wire.DefaultMaxFrameBytes,
			MaxMessageBytes: wire.DefaultMaxMessageBytes, ServerName: "fake-" + strconv.Itoa(n.idx), RunID: 1}
		b := ok.Append(nil)
		c.send(append(wire.AppendHeader(nil, wire.TypeHelloOK, 0, h.Corr, len(b)), b...))
	case wire.TypeInitProducer:
		fc.mu.Lock()
		fc.pid++
		id := fc.pid
		fc.mu.Unlock()
		c.send(wire.AppendProducerID(nil, h.Corr, id))
	case wire.TypeDescribeTopic:
		info := wire.TopicInfo{Name: string(body[2:]), Partitions: make([]wire.PartitionInfo, fc.parts)}
		for i := range info.Partitions {
			info.Partitions[i].ID = uint32(i)
		}
		b := info.Append(nil, wire.Version)
		c.send(append(wire.AppendHeader(nil, wire.TypeTopicInfo, 0, h.Corr, len(b)), b...))
	case wire.TypePublish:
		v, err := wire.DecodeBatchView(body)
		if err != nil {
			return
		}
		n.publish(c, h.Corr, v.Partition, wire.Batch(append([]byte(nil), v.Batch...)))
	case wire.TypeFetch:
		f, err := wire.DecodeFetch(body)
		if err != nil {
			return
		}
		if e := n.refusal(f.Partition); e != nil {
			c.send(errorFrame(h.Corr, e))
			return
		}
		fc.mu.Lock()
		end := int64(len(fc.logs[f.Partition]))
		fc.mu.Unlock()
		b := wire.AppendFetchResultHeader(nil, wire.FetchResultHeader{Partition: f.Partition, EndOffset: end, Offset: end})
		c.send(append(wire.AppendHeader(nil, wire.TypeFetchResult, 0, h.Corr, len(b)), b...))
	case wire.TypePing:
		c.send(wire.AppendHeader(nil, wire.TypePong, 0, h.Corr, 0))
	}
}

func errorFrame(corr uint32, e *wire.Error) []byte {
	b := wire.AppendError(nil, e.Code, e.Message)
	return append(wire.AppendHeader(nil, wire.TypeError, 0, corr, len(b)), b...)
}

// refusal is the NOT_LEADER a node answers for a partition it does not
// lead, or nil; a refusal is counted in refused.
func (n *fakeNode) refusal(p int32) *wire.Error {
	fc := n.fc
	fc.mu.Lock()
	defer fc.mu.Unlock()
	l := fc.leaders[p]
	if l == n.idx {
		return nil
	}
	select {
	case fc.refused <- n.idx:
	default:
	}
	if l < 0 {
		return wire.NotLeader(0, "", "partition "+strconv.Itoa(int(p))+" of the fake")
	}
	return wire.NotLeader(uint64(l+1), fc.nodes[l].addr, "partition "+strconv.Itoa(int(p))+" of the fake")
}

func (n *fakeNode) publish(c *fakeConn, corr uint32, p int32, b wire.Batch) {
	fc := n.fc
	if e := n.refusal(p); e != nil {
		c.send(errorFrame(corr, e))
		return
	}
	fc.mu.Lock()
	if fc.holding[n.idx] {
		fc.held[n.idx] = append(fc.held[n.idx], heldPub{c, corr, p, b})
		fc.mu.Unlock()
		return
	}
	base := fc.storeLocked(p, b)
	fc.mu.Unlock()
	c.send(wire.AppendPublishAck(nil, corr, wire.PublishAck{Partition: p, BaseOffset: base, Count: uint32(b.Count())}))
}

// storeLocked appends b's records to p's log, or finds the idempotent
// batch stored before, and returns its base offset. fc.mu held.
func (fc *fakeCluster) storeLocked(p int32, b wire.Batch) int64 {
	k := fakeSeq{b.ProducerID(), p, b.ProducerSeq()}
	if k.id != wire.NoProducer {
		if base, ok := fc.stored[k]; ok {
			return base
		}
	}
	base := int64(len(fc.logs[p]))
	it := b.Records()
	var r wire.Record
	for it.Next(&r) {
		fc.logs[p] = append(fc.logs[p], string(r.Value))
	}
	if k.id != wire.NoProducer {
		fc.stored[k] = base
	}
	return base
}

func (fc *fakeCluster) setLeader(p, node int) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.leaders[p] = node
}

func (fc *fakeCluster) log(p int) []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]string(nil), fc.logs[p]...)
}

// hold makes node i keep the publishes it would store, unanswered.
func (fc *fakeCluster) hold(i int) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.holding[i] = true
}

// awaitHeld waits until node i holds at least n publishes.
func (fc *fakeCluster) awaitHeld(i, n int) {
	fc.t.Helper()
	require.Eventually(fc.t, func() bool {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return len(fc.held[i]) >= n
	}, 30*time.Second, time.Millisecond, "node %d never held %d publishes", i, n)
}

// stepDown ends node i's leadership of p in favour of node to: the
// publishes it holds are answered NOT_LEADER; with stored, they were
// stored first (committed as the leader stepped down), and the refusal
// says that they may have been.
func (fc *fakeCluster) stepDown(i, p, to int, stored bool) {
	fc.mu.Lock()
	held := fc.held[i]
	delete(fc.held, i)
	delete(fc.holding, i)
	fc.leaders[p] = to
	why := "partition " + strconv.Itoa(p)
	if stored {
		why += "; the leader stepped down with this batch in flight: it may have been stored"
		for _, h := range held {
			fc.storeLocked(h.part, h.batch)
		}
	}
	e := wire.NotLeader(uint64(to+1), fc.nodes[to].addr, why)
	fc.mu.Unlock()
	for _, h := range held {
		h.conn.send(errorFrame(h.corr, e))
	}
}

func dialClusterT(t *testing.T, addrs string, opts ...client.Option) *client.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.DialCluster(ctx, addrs, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func values(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out
}

// TestClusterRoutesToEachLeader: a Cluster that knows one node's address
// learns the others from its answers, and each partition's messages go to
// its leader; keyed ones to their key's partition.
func TestClusterRoutesToEachLeader(t *testing.T) {
	fc := newFakeCluster(t, 3, 3)
	cl := dialClusterT(t, fc.nodes[0].addr, client.WithoutIdempotence())
	ctx := ctxT(t)
	for p := range 3 {
		addr, err := cl.Leader(ctx, "t", p)
		require.NoError(t, err)
		require.Equal(t, fc.nodes[p].addr, addr)
	}
	for p := range 3 {
		for i := range 5 {
			ack, err := cl.Publish(ctx, "t", client.Message{Value: []byte(fmt.Sprint(p, "-", i))}, client.ToPartition(p))
			require.NoError(t, err)
			require.Equal(t, client.Ack{Partition: int32(p), Offset: int64(i)}, ack)
		}
	}
	for i := range 30 {
		key := fmt.Sprint("key-", i)
		ack, err := cl.Publish(ctx, "t", client.Message{Key: []byte(key), Value: []byte(key)})
		require.NoError(t, err)
		require.Equal(t, int32(client.KeyPartition([]byte(key), 3)), ack.Partition)
	}
	for p := range 3 {
		require.Equal(t, values(strconv.Itoa(p)+"-", 0, 5), fc.log(p)[:5])
	}
}

// TestClusterFollowsNotLeader: when a partition's leader changes, the old
// leader's NOT_LEADER names the new one and the Cluster sends the refused
// batch, and every later one, there, in order.
func TestClusterFollowsNotLeader(t *testing.T) {
	for _, idem := range []bool{false, true} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) {
			fc := newFakeCluster(t, 3, 1)
			opts := []client.Option{client.WithoutIdempotence()}
			if idem {
				opts = []client.Option{client.WithIdempotence()}
			}
			cl := dialClusterT(t, fc.nodes[0].addr+","+fc.nodes[1].addr, opts...)
			ctx := ctxT(t)
			for i := range 10 {
				require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
			}
			require.NoError(t, cl.Flush(ctx))
			fc.setLeader(0, 2)
			for i := 10; i < 20; i++ {
				require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
			}
			require.NoError(t, cl.Flush(ctx))
			require.Equal(t, values("m", 0, 20), fc.log(0))
			addr, err := cl.Leader(ctx, "t", 0)
			require.NoError(t, err)
			require.Equal(t, fc.nodes[2].addr, addr)
			require.NotZero(t, cl.Rerouted())
		})
	}
}

// TestClusterWaitsOutAnElection: while a partition has no leader, the
// Cluster keeps asking (with backoff) and publishes wait; once a leader
// is elected they go there.
func TestClusterWaitsOutAnElection(t *testing.T) {
	fc := newFakeCluster(t, 3, 1)
	fc.setLeader(0, -1)
	cl := dialClusterT(t, fc.nodes[0].addr+","+fc.nodes[1].addr+","+fc.nodes[2].addr, client.WithIdempotence())
	ctx := ctxT(t)
	done := make(chan error, 1)
	go func() {
		_, err := cl.Publish(ctx, "t", client.Message{Value: []byte("after the election")})
		done <- err
	}()
	// Refused at least twice: the Cluster asked again after a refusal.
	<-fc.refused
	<-fc.refused
	fc.setLeader(0, 1)
	require.NoError(t, <-done)
	require.Equal(t, []string{"after the election"}, fc.log(0))
}

// TestClusterGivesUpAfterTheRerouteTimeout: a partition that finds no
// leader within WithRerouteTimeout fails its publishes with the last
// answer, NOT_LEADER.
func TestClusterGivesUpAfterTheRerouteTimeout(t *testing.T) {
	fc := newFakeCluster(t, 2, 1)
	fc.setLeader(0, -1)
	cl := dialClusterT(t, fc.nodes[0].addr, client.WithRerouteTimeout(100*time.Millisecond), client.WithIdempotence())
	ctx := ctxT(t)
	_, err := cl.Publish(ctx, "t", client.Message{Value: []byte("x")})
	require.ErrorIs(t, err, client.ErrNotLeader)
	require.True(t, client.IsRetryable(err))

	// Refused after it was sent: the batch fails with the refusal, once
	// its own timeout passes, and Flush reports it.
	fc.setLeader(0, 0)
	cl = dialClusterT(t, fc.nodes[1].addr, client.WithRerouteTimeout(100*time.Millisecond), client.WithIdempotence(),
		client.WithErrorHandler(func(error) {}))
	_, err = cl.Publish(ctx, "t", client.Message{Value: []byte("first")})
	require.NoError(t, err)
	fc.setLeader(0, -1)
	require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("lost")}))
	err = cl.Flush(ctx)
	require.ErrorIs(t, err, client.ErrNotLeader)
	require.False(t, client.MayHaveBeenStored(err))
	require.Equal(t, []string{"first"}, fc.log(0))
}

// TestClusterRetryOfAStoredBatchIsIdempotent: the leader steps down with
// batches in flight, which it stored before it did (a quorum had them).
// An idempotent Cluster sends them, numbered as they were, to the new
// leader, which answers them as duplicates: each message stored once, in
// order, and acknowledged. A plain Cluster cannot tell, so those batches
// fail as possibly stored rather than risk a duplicate.
func TestClusterRetryOfAStoredBatchIsIdempotent(t *testing.T) {
	for _, idem := range []bool{true, false} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) {
			fc := newFakeCluster(t, 2, 1)
			opts := []client.Option{client.WithoutIdempotence(), client.WithBatchBytes(1)}
			if idem {
				opts = []client.Option{client.WithIdempotence(), client.WithBatchBytes(1)}
			}
			var emu sync.Mutex
			var errs []error
			opts = append(opts, client.WithErrorHandler(func(err error) {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}))
			cl := dialClusterT(t, fc.nodes[0].addr, opts...)
			ctx := ctxT(t)
			_, err := cl.Publish(ctx, "t", client.Message{Value: []byte("m0")})
			require.NoError(t, err)
			fc.hold(0)
			for i := 1; i <= 4; i++ {
				require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
			}
			fc.awaitHeld(0, 4) // one batch each (WithBatchBytes(1))
			fc.stepDown(0, 0, 1, true)
			for i := 5; i < 8; i++ {
				require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
			}
			err = cl.Flush(ctx)
			if idem {
				require.NoError(t, err)
				require.Equal(t, values("m", 0, 8), fc.log(0))
				return
			}
			require.Error(t, err)
			require.True(t, client.MayHaveBeenStored(err), "%v", err)
			require.Equal(t, values("m", 0, 8), fc.log(0), "stored once each: the refused batches were not sent again")
			emu.Lock()
			defer emu.Unlock()
			require.Len(t, errs, 4)
		})
	}
}

// TestClusterMovesBatchesOfALostNode: the leader's connection is lost with
// batches written and unanswered. An idempotent Cluster sends them to the
// partition's leader again (the same node, here, once it is back) and
// they are stored once; a plain one fails them as possibly stored.
func TestClusterMovesBatchesOfALostNode(t *testing.T) {
	for _, idem := range []bool{true, false} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) {
			fc := newFakeCluster(t, 2, 1)
			opts := []client.Option{client.WithoutIdempotence(), client.WithBatchBytes(1)}
			if idem {
				opts = []client.Option{client.WithIdempotence(), client.WithBatchBytes(1)}
			}
			lost := make(chan error, 16)
			opts = append(opts, client.WithErrorHandler(func(error) {}), client.WithStateHandler(func(st client.State, err error) {
				if st == client.StateDisconnected {
					lost <- err
				}
			}))
			cl := dialClusterT(t, fc.nodes[1].addr+","+fc.nodes[0].addr, opts...)
			ctx := ctxT(t)
			fc.hold(0)
			for i := range 3 {
				require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
			}
			fc.awaitHeld(0, 3)
			fc.mu.Lock()
			for _, h := range fc.held[0] {
				fc.storeLocked(h.part, h.batch) // stored, the answers lost with the connection
			}
			fc.held[0], fc.holding[0] = nil, false
			fc.mu.Unlock()
			fc.nodes[0].cut()
			require.ErrorIs(t, <-lost, client.ErrConnectionLost)
			err := cl.Flush(ctx)
			require.Equal(t, values("m", 0, 3), fc.log(0))
			if idem {
				require.NoError(t, err)
			} else {
				require.True(t, client.MayHaveBeenStored(err), "%v", err)
			}
			// The partition goes on at its leader.
			_, err = cl.Publish(ctx, "t", client.Message{Value: []byte("m3")})
			require.NoError(t, err)
			require.Equal(t, values("m", 0, 4), fc.log(0))
		})
	}
}

// TestClusterFetchFollowsTheLeader: a fetch goes to the partition's leader,
// and to the new one after a change.
func TestClusterFetchFollowsTheLeader(t *testing.T) {
	fc := newFakeCluster(t, 3, 2)
	cl := dialClusterT(t, fc.nodes[0].addr, client.WithoutIdempotence())
	ctx := ctxT(t)
	_, err := cl.Publish(ctx, "t", client.Message{Value: []byte("x")}, client.ToPartition(1))
	require.NoError(t, err)
	f, err := cl.Fetch(ctx, "t", 1, client.Latest)
	require.NoError(t, err)
	require.Equal(t, int64(1), f.End)
	fc.setLeader(1, 2)
	f, err = cl.Fetch(ctx, "t", 1, client.Latest)
	require.NoError(t, err)
	require.Equal(t, int64(1), f.End)
	_, err = cl.Fetch(ctx, "t", 1, client.Latest)
	require.NoError(t, err)
	// A refusal that is not about the leader is returned as it is.
	_, err = cl.Fetch(ctx, "bad topic!", 0, client.Latest)
	require.Error(t, err)
	require.False(t, errors.Is(err, client.ErrNotLeader))
}

// TestClusterReroutesOutOfOrderFromASteppedDownLeader: a node that steps
// down answers its first held batch NOT_LEADER and the ones behind it
// OUT_OF_ORDER_SEQUENCE (it forgot the first, whose proposal failed). An
// idempotent Cluster takes those too to the new leader, in order: nothing
// fails, each message is stored once.
func TestClusterReroutesOutOfOrderFromASteppedDownLeader(t *testing.T) {
	fc := newFakeCluster(t, 2, 1)
	var emu sync.Mutex
	var errs []error
	cl := dialClusterT(t, fc.nodes[0].addr, client.WithIdempotence(), client.WithBatchBytes(1),
		client.WithErrorHandler(func(err error) {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}))
	ctx := ctxT(t)
	_, err := cl.Publish(ctx, "t", client.Message{Value: []byte("m0")})
	require.NoError(t, err)
	fc.hold(0)
	for i := 1; i <= 3; i++ {
		require.NoError(t, cl.PublishAsync(ctx, "t", client.Message{Value: []byte("m" + strconv.Itoa(i))}))
	}
	fc.awaitHeld(0, 3)
	fc.mu.Lock()
	held := fc.held[0]
	delete(fc.held, 0)
	delete(fc.holding, 0)
	fc.leaders[0] = 1
	fc.mu.Unlock()
	held[0].conn.send(errorFrame(held[0].corr, wire.NotLeader(2, fc.nodes[1].addr, "partition 0")))
	for _, h := range held[1:] {
		h.conn.send(errorFrame(h.corr, wire.Errorf(wire.CodeOutOfOrderSequence, "expected an earlier sequence")))
	}
	require.NoError(t, cl.Flush(ctx))
	require.Equal(t, values("m", 0, 4), fc.log(0))
	emu.Lock()
	defer emu.Unlock()
	require.Empty(t, errs)
}
