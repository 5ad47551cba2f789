package transport

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// The tests check for leaked goroutines by hand, as the rest of the repo
// does (no goleak): a goroutine leaks when its stack, or where it was
// created, is in this package's non-test code after every transport was
// closed.

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(30 * time.Second)
		for len(leaked()) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if l := leaked(); len(l) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines after all tests:\n%s\n", strings.Join(l, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leaked returns the stacks of the goroutines this package's code runs or
// started, but for the caller's.
func leaked() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n")[1:] { // the first is ours
		for _, line := range strings.Split(g, "\n") {
			line = strings.TrimSpace(line)
			if strings.Contains(line, "/cluster/transport/") && strings.Contains(line, ".go:") &&
				!strings.Contains(line, "_test.go:") {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// noLeaks fails the test, at its end, if goroutines of the package are
// still running once its cleanups (which close its transports) ran.
func noLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if !waitFor(func() bool { return len(leaked()) == 0 }) {
			t.Errorf("leaked goroutines:\n%s", strings.Join(leaked(), "\n\n"))
		}
	})
}

// patience is how long a test waits for a condition: generous for a
// loaded machine, since nothing is asserted about time.
const patience = 30 * time.Second

// waitFor polls cond until it holds or patience runs out.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, patience, 2*time.Millisecond, append([]any{msg}, args...)...)
}

// testMsg is a message whose Index says its place in its sender's
// sequence, with an entry of n bytes of data so messages have some size.
func testMsg(from, to, index uint64, n int) raftpb.Message {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(index + uint64(i))
	}
	return raftpb.Message{
		Type: raftpb.MsgApp, From: from, To: to,
		Term: 3, Index: index, Commit: index / 2,
		Entries: []raftpb.Entry{{Term: 3, Index: index + 1, Data: data}},
	}
}

// msgEqual compares two messages by their encodings.
func msgEqual(a, b raftpb.Message) bool {
	x, err1 := a.Marshal()
	y, err2 := b.Marshal()
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func testMsgBytes(m raftpb.Message) ([]byte, error) { return m.Marshal() }
