package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Ports every node listens on, at its own address.
const (
	clientPort  = "7070"
	httpPort    = "8080"
	clusterPort = "7400"
	adminToken  = "jepsen"
)

// node is one broker process, run in its namespace by `ip netns exec`,
// which execs the broker itself: the process signalled is the broker.
type node struct {
	id   int
	bin  string
	dir  string // the node's directory: data/ and node.log
	peer string // --peers: the first three nodes' for them, the members' for a replacement
	log  func(format string, args ...any)
	// args are more serve flags (brokerArgs).
	args []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process exits
	expected bool          // the runner stopped it: its exit is no finding
	paused   bool
	retired  bool // lost its data (wipe): refused by the others, replaced, and left out for the rest of the run
	started  time.Time
	crashes  []string // exits nobody asked for
}

func (n *node) addr() string        { return nodeIP(n.id) + ":" + clientPort }
func (n *node) httpAddr() string    { return nodeIP(n.id) + ":" + httpPort }
func (n *node) clusterAddr() string { return nodeIP(n.id) + ":" + clusterPort }
func (n *node) dataDir() string     { return filepath.Join(n.dir, "data") }

// start runs the broker; it fails if it is running.
func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("node %d is running", n.id)
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", nodeNS(n.id), n.bin, "serve",
		"--node-id", strconv.Itoa(n.id), "--cluster-addr", n.clusterAddr(), "--peers", n.peer,
		"--addr", n.addr(), "--http-addr", n.httpAddr(), "--data", n.dataDir(),
		"--admin-token", adminToken, "--allow-anonymous", "--no-auto-create-topics",
		"--shards", "1", "--event-loops", "1", "--no-pin-shards", "--cache-bytes", "16MiB",
		"--shutdown-timeout", "5s")
	cmd.Args = append(cmd.Args, n.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C at the terminal reaches only the
	// runner, which stops the nodes itself; and killed with the runner.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	_, _ = fmt.Fprintf(logf, "---- jepsen: start node %d at %s\n", n.id, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.expected, n.paused, n.started = cmd, done, false, false, time.Now()
	go n.wait(cmd, logf, done)
	return nil
}

// wait reaps the process and records an exit nobody asked for.
func (n *node) wait(cmd *exec.Cmd, logf *os.File, done chan struct{}) {
	err := cmd.Wait()
	_ = logf.Close()
	n.mu.Lock()
	if !n.expected {
		why := "exit status 0"
		if err != nil {
			why = err.Error()
		}
		msg := fmt.Sprintf("node %d exited on its own (%s): %s", n.id, why, n.lastWords())
		n.crashes = append(n.crashes, msg)
		n.log("CRASH %s", msg)
	}
	n.cmd = nil
	n.mu.Unlock()
	close(done)
}

// lastWords returns the first line of a panic or fatal error in the
// node's log since its last start, or else its last line.
func (n *node) lastWords() string {
	text, err := n.logSinceStart()
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return l
		}
	}
	return lines[len(lines)-1]
}

func (n *node) startedAt() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.started
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// signal sends sig to a running broker; expect marks the exit it causes
// as the runner's doing.
func (n *node) signal(sig syscall.Signal, expect bool) (chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil, fmt.Errorf("node %d is not running", n.id)
	}
	if expect {
		n.expected = true
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return n.done, n.cmd.Process.Signal(sig)
}

// kill stops the broker with SIGKILL and waits for it to exit; a node
// that is down (it crashed) stays down.
func (n *node) kill() error {
	done, err := n.signal(syscall.SIGKILL, true)
	if err != nil {
		if !n.running() {
			return nil
		}
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("node %d did not exit 10s after SIGKILL", n.id)
	}
}

// stop asks the broker to stop (SIGTERM) and waits up to d, then kills
// it; a broker that needed killing is reported.
func (n *node) stop(d time.Duration) error {
	if n.isPaused() {
		_, _ = n.signal(syscall.SIGCONT, false)
	}
	done, err := n.signal(syscall.SIGTERM, true)
	if err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(d):
	}
	kerr := n.kill()
	return errors.Join(fmt.Errorf("node %d did not stop within %v of SIGTERM; killed", n.id, d), kerr)
}

func (n *node) isPaused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// wipe deletes the node's data directory; the node must be stopped.
func (n *node) wipe() error {
	if n.running() {
		return fmt.Errorf("node %d is running", n.id)
	}
	return os.RemoveAll(n.dataDir())
}

// retire leaves the node out for the rest of the run (it must be stopped).
func (n *node) retire() {
	n.mu.Lock()
	n.retired = true
	n.mu.Unlock()
}

func (n *node) isRetired() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.retired
}

// logged reports whether the node's log since its last start has a line
// containing s.
func (n *node) logged(s string) bool {
	text, err := n.logSinceStart()
	return err == nil && strings.Contains(text, s)
}

// logSinceStart returns the node's log since its last start.
func (n *node) logSinceStart() (string, error) {
	data, err := os.ReadFile(filepath.Join(n.dir, "node.log"))
	if err != nil {
		return "", err
	}
	text := string(data)
	if i := strings.LastIndex(text, "---- jepsen: start"); i >= 0 {
		text = text[i:]
	}
	return text, nil
}

// crashed returns the exits nobody asked for.
func (n *node) crashed() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.crashes)
}
