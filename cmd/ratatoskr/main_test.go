package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

var binary string

// TestMain builds the ratatoskr binary once; the tests run it as users do.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ratatoskr-cmd")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ratatoskr")
	out, err := exec.Command("go", "build", "-tags", "invariants", "-o", binary, ".").CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("build: %v\n%s", err, out))
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// server is a `ratatoskr serve` subprocess.
type server struct {
	cmd      *exec.Cmd
	addr     string
	httpAddr string
	tlsAddr  string // "off" without a TLS listener
	logs     *syncBuffer
	exited   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRE = regexp.MustCompile(`msg="ratatoskr listening" addr=(\S+) http=(\S+) tls_addr=(\S+)`)

// startServer runs serve with args and env, waiting for its listening line.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	return startServerIn(t, t.TempDir(), env, args...)
}

// startServerIn is startServer on a given data directory.
func startServerIn(t *testing.T, data string, env []string, args ...string) *server {
	t.Helper()
	return startServerVia(t, nil, data, env, args...)
}

// startServerVia is startServerIn run through a wrapper command, such as
// a shell that lowers a limit first; the binary and its arguments follow
// the wrapper's own.
func startServerVia(t *testing.T, wrapper []string, data string, env []string, args ...string) *server {
	t.Helper()
	argv := append(append(append([]string{}, wrapper...), binary, "serve", "--data", data), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(pw, logs)
	require.NoError(t, cmd.Start())
	s := &server{cmd: cmd, logs: logs, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait(); _ = pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if err := <-s.exited; err != nil {
			t.Logf("serve exited: %v", err)
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
	}()
	select {
	case m := <-found:
		s.addr, s.httpAddr, s.tlsAddr = m[1], strings.Trim(m[2], `"`), m[3]
	case err := <-s.exited:
		s.exited <- err // for the cleanup
		t.Fatalf("serve exited: %v\n%s", err, logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not report listening\n%s", logs)
	}
	return s
}

// stop sends SIGTERM and returns the exit error.
func (s *server) stop(t *testing.T) error {
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-s.exited:
		s.exited <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop on SIGTERM\n%s", s.logs)
	}
	return nil
}

// runCLI runs a command and returns its stdout, stderr and exit code.
func runCLI(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	return runCLIWith(t, stdin, nil, args...)
}

// runCLIEnv is runCLI with variables added to the environment.
func runCLIEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIWith(t, nil, env, args...)
}

func runCLIWith(t *testing.T, stdin io.Reader, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

func TestServeHealthAndTopicCommands(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	resp, err := http.Get("http://" + s.httpAddr + "/healthz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "ok\n", string(body))

	out, errOut, code := runCLI(t, nil, "topic", "create", "orders", "--partitions", "3", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "created topic orders")
	_, errOut, code = runCLI(t, nil, "topic", "create", "orders", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "topic exists")

	out, _, code = runCLI(t, nil, "topic", "list", "--server", s.addr)
	require.Equal(t, 0, code)
	require.Regexp(t, `orders\s+3`, out)

	out, _, code = runCLI(t, nil, "topic", "describe", "orders", "--server", s.addr)
	require.Equal(t, 0, code)
	require.Contains(t, out, "max-subscribers = 10000")
	require.Regexp(t, `(?m)^PARTITION\s+START\s+END\s+BYTES\s+SEGMENTS\s+SUBSCRIBERS\s+CORRUPT\s+STATE$`, out)
	require.Regexp(t, `(?m)^2\s+0\s+0\s+0\s+1\s+0\s+0\s+online$`, out, "partition 2: empty, one segment, no subscribers, online")

	out, _, code = runCLI(t, nil, "topic", "delete", "orders", "--server", s.addr)
	require.Equal(t, 0, code)
	require.Contains(t, out, "deleted topic orders")
	_, errOut, code = runCLI(t, nil, "topic", "delete", "orders", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "unknown topic")
	require.Equal(t, 1, strings.Count(errOut, "ratatoskr:"), "the broker's error is prefixed once, not twice: %q", errOut)
}

// TestUsageErrors: a wrong command line is answered with the error first
// (and kong's suggestion), where the help is, and exit status 2; nothing
// else is printed.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		err, hint string
	}{
		{[]string{"topic", "list", "--serverr", "x"}, `unknown flag --serverr, did you mean "--server"?`, `"ratatoskr topic list --help"`},
		{[]string{"topc", "list"}, `unexpected argument topc, did you mean "topic"?`, `"ratatoskr --help"`},
		{[]string{"topic", "describe"}, `expected "<name>"`, `"ratatoskr topic describe --help"`},
		{[]string{"topic", "create", "x", "--retenton", "1h"}, `unknown flag --retenton, did you mean "--retention"?`,
			`Run "ratatoskr topic create --help" for usage.`}, // the command, not its arguments
		{[]string{"sub", "t", "--from", "soon"}, `sub: --from "soon": want latest, earliest, an offset, -N (before the end), ` +
			`a duration (1h: an hour ago), an RFC 3339 time or a date (YYYY-MM-DD)`, `"ratatoskr sub --help"`},
	} {
		out, errOut, code := runCLI(t, nil, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		require.Empty(t, out)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		require.Len(t, lines, 2, "%v: %q", tc.args, errOut)
		require.Equal(t, "ratatoskr: "+tc.err, lines[0])
		require.Contains(t, lines[1], tc.hint)
	}
	out, _, code := runCLI(t, nil, "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Exit status: 0 success; 1 the command failed; 2 a usage error")
}

// TestVersion: `ratatoskr version` and `ratatoskr --version` print the
// same line: the version, the Go version and the protocol versions.
func TestVersion(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "version")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^ratatoskr \S+.*, go1\.\d+.*, protocol \d+-\d+\n$`, out)
	require.Contains(t, out, runtime.Version())
	flagOut, errOut, code := runCLI(t, nil, "--version")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, out, flagOut)
}

func TestEnvironmentAndFlagPrecedence(t *testing.T) {
	s := startServer(t, []string{"RATATOSKR_ADDR=127.0.0.1:0", "RATATOSKR_HTTP_ADDR=", "RATATOSKR_MAX_TOPICS=1"})
	require.Equal(t, "", s.httpAddr, "the environment disabled HTTP")
	_, _, code := runCLI(t, nil, "topic", "create", "a", "--server", s.addr)
	require.Equal(t, 0, code)
	_, errOut, code := runCLI(t, nil, "topic", "create", "b", "--server", s.addr)
	require.Equal(t, 1, code, "RATATOSKR_MAX_TOPICS=1 applies")
	require.Contains(t, errOut, "too many topics")

	// A flag wins over the environment.
	s2 := startServer(t, []string{"RATATOSKR_MAX_TOPICS=1"}, "--addr", "127.0.0.1:0", "--http-addr", "", "--max-topics", "2")
	for _, name := range []string{"a", "b"} {
		_, errOut, code = runCLI(t, nil, "topic", "create", name, "--server", s2.addr)
		require.Equal(t, 0, code, errOut)
	}
	// RATATOSKR_SERVER is the client commands' default address.
	cmd := exec.Command(binary, "topic", "list")
	cmd.Env = append(os.Environ(), "RATATOSKR_SERVER="+s2.addr)
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "b ")
}

func TestInvalidConfigStopsStartup(t *testing.T) {
	_, errOut, code := runCLI(t, nil, "serve", "--addr", "127.0.0.1:0", "--http-addr", "", "--data", t.TempDir(), "--max-message-bytes", "0")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "MaxMessageBytes")
}

func TestPubSubCommands(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	const lines = 200_000
	sub := exec.Command(binary, "sub", "stream", "-n", strconv.Itoa(lines+2), "--server", s.addr)
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	_, _, code := runCLI(t, nil, "topic", "create", "stream", "--server", s.addr)
	require.Equal(t, 0, code)
	require.NoError(t, sub.Start())
	// Wait until the subscription exists before publishing.
	require.Eventually(t, func() bool {
		out, _, _ := runCLI(t, nil, "topic", "describe", "stream", "--server", s.addr)
		return regexp.MustCompile(`(?m)^0\s+\d+\s+\d+\s+\d+\s+\d+\s+1\s+0\s+online$`).MatchString(out)
	}, 10*time.Second, 20*time.Millisecond)

	_, errOut, code := runCLI(t, nil, "pub", "stream", "first", "second", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	var in strings.Builder
	for i := range lines {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	start := time.Now()
	_, errOut, code = runCLI(t, strings.NewReader(in.String()), "pub", "stream", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	t.Logf("piped %d lines through pub in %v", lines, time.Since(start))

	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, subErr.String())
	case <-time.After(30 * time.Second):
		_ = sub.Process.Kill()
		t.Fatal("sub did not exit after its count")
	}
	got := strings.Split(strings.TrimSuffix(subOut.String(), "\n"), "\n")
	require.Len(t, got, lines+2)
	require.Equal(t, "first", got[0])
	require.Equal(t, "second", got[1])
	for i := range lines {
		if got[i+2] != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d: got %q", i, got[i+2])
		}
	}
}

func TestPubFailsClearly(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "", "--no-auto-create-topics")
	_, errOut, code := runCLI(t, nil, "pub", "missing", "x", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "unknown topic")

	_, errOut, code = runCLI(t, nil, "pub", "t", "x", "--server", "127.0.0.1:1", "--timeout", "2s")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "dial")
}

// TestGracefulShutdownAndRestart: SIGTERM stops the broker cleanly after
// everything acknowledged was delivered, and a new broker binds the same
// address at once although the old one's connections linger in TIME_WAIT.
func TestGracefulShutdownAndRestart(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Without reconnecting, the clients stop with the broker and say why.
	pub, err := client.Dial(ctx, s.addr, client.WithoutReconnect())
	require.NoError(t, err)
	defer func() { _ = pub.Close() }()
	subc, err := client.Dial(ctx, s.addr, client.WithoutReconnect())
	require.NoError(t, err)
	defer func() { _ = subc.Close() }()
	var mu sync.Mutex
	got := 0
	_, err = subc.Subscribe(ctx, "t", func(*client.Delivery) { mu.Lock(); got++; mu.Unlock() })
	require.NoError(t, err)
	const msgs = 50_000
	for range msgs {
		require.NoError(t, pub.PublishAsync(ctx, "t", client.Message{Value: []byte("payload")}))
	}
	require.NoError(t, pub.Flush(ctx))

	require.NoError(t, s.stop(t), "serve exits 0 on SIGTERM\n%s", s.logs)
	// The broker wrote them all before it closed; the client's handler
	// may still be working through them.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got == msgs
	}, 30*time.Second, time.Millisecond, "acknowledged messages were delivered before the broker closed")
	select {
	case <-subc.Done():
	case <-ctx.Done():
		t.Fatal("the subscriber's client did not stop with the broker")
	}
	require.ErrorIs(t, subc.Err(), client.ErrShuttingDown, "clients are told why")
	require.Contains(t, s.logs.String(), "ratatoskr stopped")

	s2 := startServer(t, nil, "--addr", s.addr, "--http-addr", "")
	require.Equal(t, s.addr, s2.addr)
	c, err := client.Dial(ctx, s2.addr)
	require.NoError(t, err)
	_, err = c.Publish(ctx, "t", client.Message{Value: []byte("after restart")})
	require.NoError(t, err)
	require.NoError(t, c.Close())
}
