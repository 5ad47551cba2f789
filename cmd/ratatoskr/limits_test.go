package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// lowFDLimit runs the broker with at most 200 open files.
var lowFDLimit = []string{"sh", "-c", `ulimit -n 200 && exec "$@"`, "sh"}

// flood opens n bare TCP connections that never send a byte.
func flood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	return conns
}

func publishOK(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	_, err := c.Publish(ctx, "fd", client.Message{Value: []byte("still serving")})
	require.NoError(t, err)
}

// More bare connections than the broker has descriptors: accept(2) fails
// with EMFILE. The listener waits it out instead of dying, the clients
// already connected keep working, and once the flood goes new clients
// connect and the broker is ready.
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	s := startServerVia(t, lowFDLimit, t.TempDir(), nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--max-connections", "1000", "--max-handshakes-per-address", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c0, err := client.Dial(ctx, s.addr)
	require.NoError(t, err)
	defer func() { _ = c0.Close() }()
	publishOK(t, ctx, c0)

	conns := flood(t, s.addr, 300)
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "out of file descriptors") },
		30*time.Second, 10*time.Millisecond, "the broker never ran out of descriptors")
	publishOK(t, ctx, c0)

	for _, c := range conns {
		_ = c.Close()
	}
	require.Eventually(t, func() bool {
		c, err := client.Dial(ctx, s.addr)
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		_, err = c.Publish(ctx, "fd", client.Message{Value: []byte("new client")})
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	requireReady(t, s)
	publishOK(t, ctx, c0)
}

// Under the default limits the broker never gets that far: connections
// past its share of the descriptors are refused with LIMIT_EXCEEDED.
func TestConnectionsPastTheLimitAreRefused(t *testing.T) {
	s := startServerVia(t, lowFDLimit, t.TempDir(), nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c0, err := client.Dial(ctx, s.addr)
	require.NoError(t, err)
	defer func() { _ = c0.Close() }()

	conns := flood(t, s.addr, 100) // the limit is (200-128)/2, at least 64
	last := conns[len(conns)-1]
	_ = last.SetReadDeadline(time.Now().Add(30 * time.Second))
	var buf []byte
	for {
		f, n, err := wire.ReadFrame(buf, 1<<20)
		require.NoError(t, err)
		if n > 0 {
			require.Equal(t, wire.TypeError, f.Type)
			e, err := wire.DecodeError(f.Body)
			require.NoError(t, err)
			require.Equal(t, wire.CodeLimitExceeded, e.Code, "%v", e)
			break
		}
		chunk := make([]byte, 4096)
		m, err := last.Read(chunk)
		require.NoError(t, err)
		buf = append(buf, chunk[:m]...)
	}
	require.NotContains(t, s.logs.String(), "accept failed")
	publishOK(t, ctx, c0)
	requireReady(t, s)
}

func requireReady(t *testing.T, s *server) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)
}
