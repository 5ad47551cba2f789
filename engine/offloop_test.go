package engine

import (
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// gateFS holds every MkdirAll and RemoveAll of a path containing match
// until the test opens the gate: a disk that takes as long as the test
// wants.
type gateFS struct {
	vfs.FS
	armed   atomic.Bool
	match   string
	entered chan struct{} // one send per held call
	gate    chan struct{} // closed: let them through
	once    sync.Once
}

// newGateFS returns an armed gate.
func newGateFS(match string) *gateFS {
	g := &gateFS{FS: vfs.Default(), match: match, entered: make(chan struct{}, 64), gate: make(chan struct{})}
	g.armed.Store(true)
	return g
}

func (g *gateFS) hold(name string) {
	if g.armed.Load() && strings.Contains(name, g.match) {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-g.gate
	}
}

func (g *gateFS) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gateFS) MkdirAll(name string, perm fs.FileMode) error {
	g.hold(name)
	return g.FS.MkdirAll(name, perm)
}

func (g *gateFS) RemoveAll(name string) error {
	g.hold(name)
	return g.FS.RemoveAll(name)
}

// waitEntered waits until a call is held at the gate.
func (g *gateFS) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the disk work never started")
	}
}

// A topic whose creation waits for the disk does not hold up the other
// connections of its event loop.
func TestTopicCreationRunsOffTheEventLoop(t *testing.T) {
	g := newGateFS("/topics/slow")
	e := startBroker(t, func(c *Config) { c.FS, c.EventLoops = g, 1 })
	t.Cleanup(g.open) // before the broker's shutdown, which waits for the disk work
	ctx := testCtx(t)
	busy := dial(t, e)
	other := dial(t, e) // on the same, only, loop
	_, err := other.Publish(ctx, "fast", client.Message{Value: []byte("1")})
	require.NoError(t, err)

	created := make(chan error, 1)
	go func() { created <- busy.CreateTopic(ctx, "slow", client.TopicConfig{Partitions: 4}) }()
	g.waitEntered(t)
	for i := range 20 {
		_, err := other.Publish(ctx, "fast", client.Message{Value: []byte{byte(i)}})
		require.NoError(t, err, "the loop waited for another connection's disk work")
	}
	select {
	case err := <-created:
		t.Fatalf("the create finished before its disk work: %v", err)
	default:
	}
	g.open()
	require.NoError(t, <-created)
}

// Deleting a topic is disk work too.
func TestTopicDeletionRunsOffTheEventLoop(t *testing.T) {
	g := newGateFS("/topics/slow")
	g.armed.Store(false) // creation goes through
	e := startBroker(t, func(c *Config) { c.FS, c.EventLoops = g, 1 })
	t.Cleanup(g.open)
	ctx := testCtx(t)
	busy, other := dial(t, e), dial(t, e)
	require.NoError(t, busy.CreateTopic(ctx, "slow", client.TopicConfig{}))
	_, err := other.Publish(ctx, "fast", client.Message{Value: []byte("x")})
	require.NoError(t, err)
	g.armed.Store(true)

	deleted := make(chan error, 1)
	go func() { deleted <- busy.DeleteTopic(ctx, "slow") }()
	g.waitEntered(t)
	_, err = other.Publish(ctx, "fast", client.Message{Value: []byte("y")})
	require.NoError(t, err)
	g.open()
	require.NoError(t, <-deleted)
}

// Frames pipelined after a CreateTopic see the topic: the connection takes
// no frame while its create runs.
func TestFramesAfterCreateSeeTheTopic(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.AutoCreateTopics = false })
	r := dialRaw(t, e)
	r.hello()
	create := (&wire.CreateTopic{Name: "piped", Partitions: 3}).Append(nil)
	frames := append(wire.AppendHeader(nil, wire.TypeCreateTopic, 0, 2, len(create)), create...)
	frames = append(frames, publishFrame("piped", 2, 3, "v")...)
	r.send(frames)
	got := map[uint32]wire.Type{}
	for range 2 {
		f := r.next()
		got[f.Corr] = f.Type
	}
	require.Equal(t, map[uint32]wire.Type{2: wire.TypeOK, 3: wire.TypePublishAck}, got)
}

// A connection that goes while its publish waits for the topic to be
// created leaks nothing.
func TestClosedWhileParkedReleasesItsPublish(t *testing.T) {
	g := newGateFS("/topics/gone")
	e := startBroker(t, func(c *Config) { c.FS = g })
	t.Cleanup(g.open)
	before := storage.LiveBufs()
	r := dialRaw(t, e)
	r.hello()
	r.send(publishFrame("gone", -1, 2, "v"))
	g.waitEntered(t)
	require.NoError(t, r.c.Close())
	require.Eventually(t, func() bool { return e.srv.Counters().Connections == 0 }, 20*time.Second, time.Millisecond)
	g.open()
	require.Eventually(t, func() bool { return storage.LiveBufs() == before }, 20*time.Second, time.Millisecond)
	require.NotNil(t, e.topics.get([]byte("gone")), "the topic is created all the same")
}

func TestAutoCreationIsRateLimited(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.AutoCreateRate = 0.001 }) // a burst of one
	ctx := testCtx(t)
	c := dial(t, e)
	_, err := c.Publish(ctx, "first", client.Message{Value: []byte("1")})
	require.NoError(t, err)
	_, err = c.Publish(ctx, "second", client.Message{Value: []byte("2")})
	require.ErrorIs(t, err, client.ErrLimitExceeded)
	require.True(t, client.IsRetryable(err))
	require.Nil(t, e.topics.get([]byte("second")))
	// Explicit creates are not limited.
	require.NoError(t, c.CreateTopic(ctx, "second", client.TopicConfig{}))
	_, err = c.Publish(ctx, "second", client.Message{Value: []byte("2")})
	require.NoError(t, err)
}

// A publish parked while its topic is created, when the broker shuts down
// meanwhile, still gets its buffer released: the worker runs its answer
// once the connection has closed, though its loop is gone.
func TestShutdownWhileParkedReleasesItsPublish(t *testing.T) {
	g := newGateFS("/topics/late")
	e := startBroker(t, func(c *Config) { c.FS = g })
	t.Cleanup(g.open)
	before := storage.LiveBufs()
	r := dialRaw(t, e)
	r.hello()
	r.send(publishFrame("late", -1, 2, "v"))
	g.waitEntered(t)
	stopped := make(chan error, 1)
	go func() { stopped <- e.Shutdown(testCtx(t)) }()
	require.Eventually(t, func() bool { return e.srv.Counters().Connections == 0 }, 30*time.Second, time.Millisecond,
		"the loops closed the connection")
	g.open()
	require.NoError(t, <-stopped)
	require.Equal(t, before, storage.LiveBufs())
}
