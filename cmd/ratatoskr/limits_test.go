package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
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

// rss is a process's resident set size in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Clients that send the larger part of big publishes and stop make the
// broker hold that memory; once they go, it goes back to the operating
// system within a minute.
func TestMemoryReturnsAfterPartialFrames(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c0, err := client.Dial(ctx, s.addr)
	require.NoError(t, err)
	defer func() { _ = c0.Close() }()
	publishOK(t, ctx, c0)
	pid := s.cmd.Process.Pid
	before := rss(t, pid)

	const conns, claim, sent = 100, 4 << 20, 3 << 20
	attackers := make([]net.Conn, 0, conns)
	for range conns {
		c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
		require.NoError(t, err)
		attackers = append(attackers, c)
		hello := (&wire.Hello{MinVersion: 1, MaxVersion: 1}).Append(nil)
		frame := append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(hello)), hello...)
		frame = append(frame, wire.AppendHeader(nil, wire.TypePublish, 0, 2, claim-wire.HeaderSize)...)
		frame = append(frame, make([]byte, sent-wire.HeaderSize)...)
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err = c.Write(frame)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return rss(t, pid) > before+conns*sent/2 }, 30*time.Second, 10*time.Millisecond,
		"the broker holds what was sent")
	peak := rss(t, pid)
	for _, c := range attackers {
		_ = c.Close()
	}
	require.Eventually(t, func() bool { return rss(t, pid) <= 2*before }, 60*time.Second, 100*time.Millisecond,
		"RSS went from %d to %d and stayed above twice that", before, peak)
	publishOK(t, ctx, c0)
	t.Logf("RSS: %d MB before, %d MB at the peak, %d MB after", before>>20, peak>>20, rss(t, pid)>>20)
}
