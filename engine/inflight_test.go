package engine

import (
	"encoding/binary"
	"io/fs"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// partialPublish is the first sent bytes of a Publish frame that claims
// length bytes in all.
func partialPublish(length, sent int) []byte {
	b := wire.AppendHeader(nil, wire.TypePublish, 0, 9, length-wire.HeaderSize)
	return append(b, make([]byte, sent-len(b))...)
}

// A Publish header takes memory for what was sent, not for the length it
// claims: 300 headers claiming 4 MiB each used to reserve 1.2 GB.
func TestPublishHeadersReserveNothing(t *testing.T) {
	e := startBroker(t, nil)
	before := storage.LiveBufs()
	const conns, sent = 300, 100
	for range conns {
		r := dialRaw(t, e)
		r.hello()
		r.send(partialPublish(e.cfg.MaxFrameBytes, sent))
	}
	require.Eventually(t, func() bool { return e.srv.Counters().InboundRead == conns*sent }, 30*time.Second, time.Millisecond)
	require.Equal(t, before, storage.LiveBufs(), "no buffer for a frame that is not half here")
}

// A frame read in part into its buffer counts the buffer; closing the
// connection gives it all back.
func TestInflightIsGivenBackOnClose(t *testing.T) {
	e := startBroker(t, nil)
	before := storage.LiveBufs()
	r := dialRaw(t, e)
	r.hello()
	r.send(partialPublish(1<<20, 600<<10))
	require.Eventually(t, func() bool { return e.srv.Counters().InboundRead >= 1<<20 }, 30*time.Second, time.Millisecond)
	require.Equal(t, before+1, storage.LiveBufs())
	require.NoError(t, r.c.Close())
	require.Eventually(t, func() bool { return inboundTotal(e) == 0 && storage.LiveBufs() == before },
		30*time.Second, time.Millisecond)
}

// Past the bound, the connections that hold the most unprocessed bytes
// are cut, and the others go on.
func TestInflightBoundCutsTheBiggestHolders(t *testing.T) { inflightCuts(t, false) }

// The same over the TLS listener.
func TestTLSInflightBoundCutsTheBiggestHolders(t *testing.T) { inflightCuts(t, true) }

func inflightCuts(t *testing.T, overTLS bool) {
	n := newSide(t, overTLS)
	e := n.start(t, func(c *Config) {
		c.MaxMessageBytes, c.MaxFrameBytes, c.MaxInflightBytes = 512<<10, 1<<20, 4<<20
	})
	ctx := testCtx(t)
	healthy := n.dial(t)
	_, err := healthy.Publish(ctx, "ok", client.Message{Value: []byte("before")})
	require.NoError(t, err)
	var hogs []*rawConn
	for range 6 { // 6 × 900 KiB held: past the 4 MiB bound
		r := n.raw(t)
		r.hello()
		r.send(partialPublish(1<<20, 900<<10))
		hogs = append(hogs, r)
	}
	require.Eventually(t, func() bool { return e.srv.Counters().InboundCuts >= 2 }, 30*time.Second, time.Millisecond)
	cut := 0
	for _, r := range hogs {
		if e.srv.Kept(r.c.LocalAddr().String()) {
			continue // kept: it stays connected
		}
		r.expectErrorThenClose(wire.CodeLimitExceeded)
		cut++
	}
	require.EqualValues(t, e.srv.Counters().InboundCuts, cut)
	require.Less(t, cut, 6, "only as many as it took to get back under the bound")
	require.Eventually(t, func() bool { return inboundTotal(e) <= 4<<20 }, 30*time.Second, time.Millisecond)
	_, err = healthy.Publish(ctx, "ok", client.Message{Value: []byte("after")})
	require.NoError(t, err)
}

// inboundTotal is every inbound byte the broker holds.
func inboundTotal(e *Engine) int64 {
	c := e.srv.Counters()
	return c.InboundRead + c.InboundPublish
}

// syncGateFS holds every fsync of a file under match while armed.
type syncGateFS struct {
	vfs.FS
	match string
	armed atomic.Bool
	gate  chan struct{}
}

func (g *syncGateFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil || !strings.Contains(name, g.match) {
		return f, err
	}
	return &syncGateFile{File: f, g: g}, nil
}

type syncGateFile struct {
	vfs.File
	g *syncGateFS
}

func (f *syncGateFile) Sync() error {
	if f.g.armed.Load() {
		<-f.g.gate
	}
	return f.File.Sync()
}

// While the disk holds the producers' publishes, connections stop taking
// new ones past three quarters of the bound instead of piling them up,
// and go on once the disk catches up; nothing is lost. Three producers
// whose windows add up to just under the bound are paused, never cut.
func TestPublishesWaitForRoomUnderTheBound(t *testing.T) { publishesWait(t, false) }

// The same over the TLS listener, whose parked connections stop reading.
func TestTLSPublishesWaitForRoomUnderTheBound(t *testing.T) { publishesWait(t, true) }

func publishesWait(t *testing.T, overTLS bool) {
	g := &syncGateFS{FS: vfs.Default(), match: "/topics/held/", gate: make(chan struct{})}
	n := newSide(t, overTLS)
	e := n.start(t, func(c *Config) {
		c.FS = g
		c.MaxMessageBytes, c.MaxFrameBytes, c.MaxInflightBytes = 128<<10, 512<<10, 8<<20
	})
	t.Cleanup(func() {
		if g.armed.CompareAndSwap(true, false) {
			close(g.gate)
		}
	})
	ctx := testCtx(t)
	admin := n.dial(t)
	require.NoError(t, admin.CreateTopic(ctx, "held", client.TopicConfig{Partitions: 3, Fsync: "always"}))
	g.armed.Store(true)
	const producers, each = 3, 40 // 40 × 100 KiB each: more than a window
	value := make([]byte, 100<<10)
	errs := make(chan error, producers)
	for p := range producers {
		// 2.5 MiB of batches in flight each; an idempotent client would
		// keep at most 5 per partition, under the pause threshold.
		c := n.dial(t, client.WithMaxPendingBytes(5<<19), client.WithoutIdempotence())
		go func() {
			for i := range each {
				v := append([]byte(nil), value...)
				binary.BigEndian.PutUint32(v, uint32(i))
				if err := c.PublishAsync(ctx, "held", client.Message{Value: v}, client.ToPartition(p)); err != nil {
					errs <- err
					return
				}
			}
			errs <- c.Flush(ctx)
		}()
	}
	require.Eventually(t, func() bool { return e.srv.Counters().InboundPauses > 0 }, 30*time.Second, time.Millisecond,
		"the connections paused")
	require.LessOrEqual(t, inboundTotal(e), int64(8<<20))
	if g.armed.CompareAndSwap(true, false) {
		close(g.gate)
	}
	for range producers {
		require.NoError(t, <-errs)
	}
	for p := range producers {
		next := uint32(0)
		for next < each {
			f, err := admin.Fetch(ctx, "held", p, client.AtOffset(int64(next)))
			require.NoError(t, err)
			for _, m := range f.Messages {
				require.Equal(t, next, binary.BigEndian.Uint32(m.Value), "partition %d in order", p)
				next++
			}
		}
	}
	require.Zero(t, e.srv.Counters().InboundCuts)
	require.Eventually(t, func() bool { return inboundTotal(e) == 0 }, 30*time.Second, time.Millisecond)
}
