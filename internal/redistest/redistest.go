// Package redistest runs a real redis-server for tests: each Start gets
// its own process on a free 127.0.0.1 port, with its own temporary
// directory, stopped when the test ends. The Makefile installs Debian's
// redis-server when it is missing; a test that needs one fails (it is
// not skipped) when the binary cannot be found.
package redistest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server process a test started.
type Server struct {
	Addr string // 127.0.0.1:port
	Dir  string // its working directory (AOF and RDB files)

	t      testing.TB
	args   []string
	tlsDir string
	auth   []string // AUTH's arguments, for Do
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
}

// Options shape the server. The zero value is AOF with appendfsync
// everysec, no RDB snapshots, no password.
type Options struct {
	// Fsync is appendfsync: "always", "everysec" (the default) or "no";
	// "off" runs with no persistence at all.
	Fsync string
	// Password turns on AUTH (requirepass); User with it adds an ACL
	// user with that password and every permission instead.
	User, Password string
	// MaxMemory, when set, is maxmemory in bytes, with the noeviction
	// policy: writes past it fail with OOM.
	MaxMemory int64
	// TLSDir, when set, holds a devcert bundle (ca.pem, server.pem,
	// server-key.pem): the server then listens with TLS only, and
	// requires a client certificate signed by the CA.
	TLSDir string
	// Extra are more "--name value" arguments.
	Extra []string
}

// Binary is the redis-server to run: $REDIS_SERVER, or redis-server on
// PATH, or Debian's /usr/bin/redis-server.
func Binary() (string, error) {
	if b := os.Getenv("REDIS_SERVER"); b != "" {
		return b, nil
	}
	if b, err := exec.LookPath("redis-server"); err == nil {
		return b, nil
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server", nil
	}
	return "", errors.New("redistest: redis-server not found: run `make debs` (installs Debian's redis-server) or set REDIS_SERVER")
}

// Start runs a redis-server for the test's lifetime.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := freePort(t)
	portArgs := []string{"--port", strconv.Itoa(port)}
	if o.TLSDir != "" {
		portArgs = []string{"--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", filepath.Join(o.TLSDir, "server.pem"), "--tls-key-file", filepath.Join(o.TLSDir, "server-key.pem"),
			"--tls-ca-cert-file", filepath.Join(o.TLSDir, "ca.pem"), "--tls-auth-clients", "yes"}
	}
	args := []string{"--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
		"--logfile", filepath.Join(dir, "redis.log")}
	switch o.Fsync {
	case "off":
		args = append(args, "--appendonly", "no")
	case "":
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	default:
		args = append(args, "--appendonly", "yes", "--appendfsync", o.Fsync)
	}
	switch {
	case o.User != "":
		args = append(args, "--user", o.User, "on", ">"+o.Password, "~*", "&*", "+@all", "--user", "default", "off")
	case o.Password != "":
		args = append(args, "--requirepass", o.Password)
	}
	if o.MaxMemory > 0 {
		args = append(args, "--maxmemory", strconv.FormatInt(o.MaxMemory, 10), "--maxmemory-policy", "noeviction")
	}
	args = append(append(args, portArgs...), o.Extra...)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, t: t, args: append([]string{bin}, args...),
		tlsDir: o.TLSDir}
	switch {
	case o.User != "":
		s.auth = []string{"AUTH", o.User, o.Password}
	case o.Password != "":
		s.auth = []string{"AUTH", o.Password}
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's redis:// URL, with the credentials it was started
// with.
func (s *Server) URL(user, password string) string {
	switch {
	case user != "":
		return "redis://" + user + ":" + password + "@" + s.Addr
	case password != "":
		return "redis://:" + password + "@" + s.Addr
	}
	return "redis://" + s.Addr
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	// The server dies with the test binary, even one killed by a timeout.
	// Pdeathsig fires when the thread that started the child ends, so
	// the start and the wait run on a goroutine locked to its thread.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, started := make(chan struct{}), make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		s.t.Fatalf("redistest: start %s: %v", s.args[0], err)
	}
	s.cmd, s.done = cmd, done
	// Ready when it answers PING; a server that exits first failed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.ping(); err == nil {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("redistest: redis-server exited at start: %s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			s.t.Fatalf("redistest: redis-server did not answer PING within 30s: %s", s.logTail())
		}
		time.Sleep(5 * time.Millisecond) // polling a process we do not control
	}
}

// ping sends PING and reads +PONG (or an AUTH error, which also says the
// server is up).
func (s *Server) ping() error {
	c, err := s.dial()
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("redistest: PING answered %q", line)
}

// dial connects to the server, with TLS and the bundle's client
// certificate when it listens with TLS.
func (s *Server) dial() (net.Conn, error) {
	if s.tlsDir == "" {
		return net.DialTimeout("tcp", s.Addr, time.Second)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(s.tlsDir, "client.pem"), filepath.Join(s.tlsDir, "client-key.pem"))
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: time.Second}
	return tls.DialWithDialer(d, "tcp", s.Addr, &tls.Config{Certificates: []tls.Certificate{cert},
		InsecureSkipVerify: true}) //nolint:gosec // a readiness probe of the test's own server
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Kill stops the server at once (SIGKILL): nothing is flushed beyond what
// its fsync policy already wrote.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop stops the server the usual way (SIGTERM: it writes its AOF and
// exits).
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart starts the server again on the same port and directory, after
// Kill or Stop; with AOF on it loads what it had written.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

// Pause stops the process (SIGSTOP) so that it answers nothing, as a hung
// or overloaded server; Resume continues it.
func (s *Server) Pause() { s.signalRunning(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signalRunning(syscall.SIGCONT) }

func (s *Server) signalRunning(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Do sends one command (its arguments as RESP bulk strings) and returns
// the reply's first line and, for a bulk reply, its body: enough for a
// test to CONFIG SET or corrupt a key without a client library.
func (s *Server) Do(args ...string) (string, error) {
	c, err := s.dial()
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if s.auth != nil {
		if _, err := c.Write(resp(s.auth)); err != nil {
			return "", err
		}
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			return "", fmt.Errorf("redistest: AUTH: %q: %w", line, err)
		}
	}
	if _, err := c.Write(resp(args)); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return "", errors.New(line[1:])
	}
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	}
	return line, nil
}

// resp encodes a command as RESP bulk strings.
func resp(args []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return []byte(b.String())
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
