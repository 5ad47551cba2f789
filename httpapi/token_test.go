package httpapi

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
)

// TestTokenGeneratedAndKept: without a configured token one is generated
// into DataDir/admin.token (owner-only) and reused by the next start; a
// stale one is refused.
func TestTokenGeneratedAndKept(t *testing.T) {
	dir := t.TempDir()
	b := newFake()
	s := serve(t, b, func(c *Config) { c.AdminToken, c.DataDir = "", dir })
	raw, err := os.ReadFile(AdminTokenPath(dir))
	require.NoError(t, err)
	tok := strings.TrimSpace(string(raw))
	require.Len(t, tok, 64, "32 random bytes in hex")
	require.Equal(t, tok, s.Token())
	st, err := os.Stat(AdminTokenPath(dir))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	s.Shutdown(t.Context())

	s2 := serve(t, b, func(c *Config) { c.AdminToken, c.DataDir = "", dir })
	require.Equal(t, tok, s2.Token(), "the generated token is reused")
	code, _, _ := get(t, s2, "Bearer "+tok, "/api/v1/topics")
	require.Equal(t, 200, code)
	stale := "0" + tok[1:]
	if stale == tok {
		stale = "1" + tok[1:]
	}
	code, _, _ = get(t, s2, "Bearer "+stale, "/api/v1/topics")
	require.Equal(t, 401, code)
}

// TestConfiguredTokenNotWritten: a configured token stays out of the data
// directory.
func TestConfiguredTokenNotWritten(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, newFake(), func(c *Config) { c.AdminToken, c.DataDir = "s3cret", dir })
	require.Equal(t, "s3cret", s.Token())
	_, err := os.Stat(AdminTokenPath(dir))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestEmptyTokenFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(AdminTokenPath(dir), []byte("\n"), 0o600))
	s := New(Config{Addr: "127.0.0.1:0", DataDir: dir, FS: vfs.Default()}, newFake())
	err := s.Start()
	require.ErrorContains(t, err, "admin.token is empty")
	require.Empty(t, s.Addr(), "the listener is closed again")
}

// TestAuthEventsAreBounded: refused token checks emit at most authLimit
// events a second, each with a clipped request line; the ones over the
// limit are counted into the next event.
func TestAuthEventsAreBounded(t *testing.T) {
	var l eventLimiter
	t0 := time.Unix(100, 0)
	for i := range authLimit {
		n, ok := l.allow(t0)
		require.True(t, ok, "event %d", i)
		require.Equal(t, 1, n)
	}
	for range 5 {
		_, ok := l.allow(t0.Add(500 * time.Millisecond))
		require.False(t, ok, "over the limit in the same second")
	}
	n, ok := l.allow(t0.Add(time.Second))
	require.True(t, ok)
	require.Equal(t, 6, n, "this event and the five suppressed")

	require.Equal(t, "GET /x", clip("GET /x"))
	long := clip("GET /" + strings.Repeat("a", 100_000))
	require.Len(t, long, maxEventAction+len("…"))

	b := newFake()
	s := New(Config{}, b)
	now := t0
	s.now = func() time.Time { return now }
	h := s.routes(testToken)
	path := "/api/v1/" + strings.Repeat("x", 2000)
	for range 3 * authLimit {
		fails(t, h, "wrong", "GET", path, "", 401, "unauthorized", "not the admin token")
	}
	auths := b.eventsOf(telemetry.EventAuth)
	require.Len(t, auths, authLimit, "the limit in one second")
	for _, ev := range auths {
		require.Len(t, ev.Action, maxEventAction+len("…"))
		require.Equal(t, 1, ev.Count)
		require.Equal(t, -1, ev.Partition)
		require.ErrorIs(t, ev.Err, errWrongToken)
	}
	now = now.Add(time.Second)
	fails(t, h, "", "GET", "/metrics", "", 401, "unauthorized", "missing credentials")
	auths = b.eventsOf(telemetry.EventAuth)
	require.Len(t, auths, authLimit+1)
	last := auths[authLimit]
	require.Equal(t, 2*authLimit+1, last.Count, "the ones suppressed and itself")
	require.Equal(t, "GET /metrics", last.Action)
	require.ErrorIs(t, last.Err, errNoToken)
}
