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
	require.Eventually(t, func() bool { return e.mem.read.Load() == conns*sent }, 30*time.Second, time.Millisecond)
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
	require.Eventually(t, func() bool { return e.mem.read.Load() >= 1<<20 }, 30*time.Second, time.Millisecond)
	require.Equal(t, before+1, storage.LiveBufs())
	require.NoError(t, r.c.Close())
	require.Eventually(t, func() bool { return e.mem.total() == 0 && storage.LiveBufs() == before },
		30*time.Second, time.Millisecond)
}

// Past the bound, the connections that hold the most unprocessed bytes
// are cut, and the others go on.
func TestInflightBoundCutsTheBiggestHolders(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.MaxMessageBytes, c.MaxFrameBytes, c.MaxInflightBytes = 512<<10, 1<<20, 4<<20
	})
	ctx := testCtx(t)
	healthy := dial(t, e)
	_, err := healthy.Publish(ctx, "ok", client.Message{Value: []byte("before")})
	require.NoError(t, err)
	var hogs []*rawConn
	for range 6 { // 6 × 900 KiB held: past the 4 MiB bound
		r := dialRaw(t, e)
		r.hello()
		r.send(partialPublish(1<<20, 900<<10))
		hogs = append(hogs, r)
	}
	require.Eventually(t, func() bool { return e.mem.cuts.Load() >= 2 }, 30*time.Second, time.Millisecond)
	cut := 0
	for _, r := range hogs {
		if s := liveSessionOf(e, r); s != nil && s.cutState.Load() == cutNone {
			continue // kept: it stays connected
		}
		r.expectErrorThenClose(wire.CodeLimitExceeded)
		cut++
	}
	require.EqualValues(t, e.mem.cuts.Load(), cut)
	require.Less(t, cut, 6, "only as many as it took to get back under the bound")
	require.Eventually(t, func() bool { return e.mem.total() <= 4<<20 }, 30*time.Second, time.Millisecond)
	_, err = healthy.Publish(ctx, "ok", client.Message{Value: []byte("after")})
	require.NoError(t, err)
}

// liveSessionOf finds the broker's session of a raw connection, or nil
// once it is gone.
func liveSessionOf(e *Engine, r *rawConn) *session {
	var found *session
	e.sessions.Range(func(k, _ any) bool {
		if s := k.(*session); s.by.remote == r.c.LocalAddr().String() {
			found = s
		}
		return found == nil
	})
	return found
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
func TestPublishesWaitForRoomUnderTheBound(t *testing.T) {
	g := &syncGateFS{FS: vfs.Default(), match: "/topics/held/", gate: make(chan struct{})}
	e := startBroker(t, func(c *Config) {
		c.FS = g
		c.MaxMessageBytes, c.MaxFrameBytes, c.MaxInflightBytes = 128<<10, 512<<10, 8<<20
	})
	t.Cleanup(func() {
		if g.armed.CompareAndSwap(true, false) {
			close(g.gate)
		}
	})
	ctx := testCtx(t)
	admin := dial(t, e)
	require.NoError(t, admin.CreateTopic(ctx, "held", client.TopicConfig{Partitions: 3, Fsync: "always"}))
	g.armed.Store(true)
	const producers, each = 3, 40 // 40 × 100 KiB each: more than a window
	value := make([]byte, 100<<10)
	errs := make(chan error, producers)
	for p := range producers {
		c := dial(t, e, client.WithMaxPendingBytes(5<<19)) // 2.5 MiB
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
	require.Eventually(t, func() bool { return e.mem.pauses.Load() > 0 }, 30*time.Second, time.Millisecond,
		"the connections paused")
	require.LessOrEqual(t, e.mem.total(), int64(8<<20))
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
	require.Zero(t, e.mem.cuts.Load())
	require.Eventually(t, func() bool { return e.mem.total() == 0 }, 30*time.Second, time.Millisecond)
}

// Past the bound, connections paused for memory (producers whose acks
// wait for the disk) are cut only after the others, even when they hold
// more: half-read frames are what an attack holds.
func TestPausedProducersAreCutLast(t *testing.T) {
	mk := func(name string, bytes int64, paused bool) *session {
		s := &session{by: origin{remote: name}}
		s.unprocessed.Store(bytes)
		s.pausedA.Store(paused)
		return s
	}
	names := func(ss []*session) (out []string) {
		for _, s := range ss {
			out = append(out, s.by.remote)
		}
		return out
	}
	producer := mk("producer", 8<<20, true)
	small, big := mk("small half frame", 1<<20, false), mk("big half frame", 3<<20, false)
	holders := []*session{producer, small, big}
	require.Equal(t, []string{"big half frame"}, names(pickCuts(holders, 2<<20)))
	require.Equal(t, []string{"big half frame", "small half frame"}, names(pickCuts(holders, 4<<20)))
	require.Equal(t, []string{"big half frame", "small half frame", "producer"}, names(pickCuts(holders, 5<<20)))
	require.Empty(t, pickCuts(holders, 0))
}
