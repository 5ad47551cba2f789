package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// printed is one line of `sub --print-offsets`.
type printed struct {
	partition int
	offset    int64
	value     string
}

func parsePrinted(t *testing.T, line string) printed {
	t.Helper()
	f := strings.SplitN(line, " ", 3)
	require.Len(t, f, 3, "line %q", line)
	p, err := strconv.Atoi(f[0])
	require.NoError(t, err, "line %q", line)
	o, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err, "line %q", line)
	return printed{p, o, f[2]}
}

func parseAll(t *testing.T, out string) []printed {
	t.Helper()
	var all []printed
	for line := range strings.Lines(out) {
		all = append(all, parsePrinted(t, strings.TrimSuffix(line, "\n")))
	}
	return all
}

// runCLIFor is runCLI with a time limit, for commands that could hang.
func runCLIFor(t *testing.T, limit time.Duration, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "%v did not finish in %v\nstdout:\n%s\nstderr:\n%s", args, limit, &out, &errb)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return out.String(), errb.String(), code
}

// describeRows parses the partition table of `group describe`:
// partition -> [owner, committed, end, lag, pending].
func describeRows(t *testing.T, out string) map[int][]string {
	t.Helper()
	rows := map[int][]string{}
	header := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 6 && f[0] == "PARTITION" {
			header = true
			continue
		}
		if !header || len(f) != 6 {
			continue
		}
		p, err := strconv.Atoi(f[0])
		require.NoError(t, err, "row %q", line)
		rows[p] = f[1:]
	}
	return rows
}

// logsOnFailure prints the broker's log when the test fails.
func logsOnFailure(t *testing.T, s *server) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", s.logs)
		}
	})
}

// TestGroupCommands runs the group commands as a user would: publish with
// keys, consume with a group member, list, describe, reset.
func TestGroupCommands(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	logsOnFailure(t, s)
	srv := []string{"--server", s.addr}
	_, errOut, code := runCLI(t, nil, append([]string{"topic", "create", "orders", "--partitions", "3"}, srv...)...)
	require.Equal(t, 0, code, errOut)

	keys := []string{"alice", "bob", "carol", "dave", "erin"}
	want := map[string]int{} // value -> partition
	for _, k := range keys {
		args := []string{"pub", "orders", "--key", k}
		for i := range 4 {
			v := fmt.Sprintf("%s-%d", k, i)
			args = append(args, v)
			want[v] = client.KeyPartition([]byte(k), 3)
		}
		_, errOut, code = runCLI(t, nil, append(args, srv...)...)
		require.Equal(t, 0, code, errOut)
	}
	_, errOut, code = runCLI(t, nil, append([]string{"pub", "orders", "--partition", "2", "p2-a", "p2-b"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	want["p2-a"], want["p2-b"] = 2, 2
	n := len(want)

	sub := append([]string{"sub", "orders", "--group", "g", "--from", "earliest", "--print-offsets"}, srv...)
	out, errOut, code := runCLIFor(t, 30*time.Second, slices.Concat(sub, []string{"-n", strconv.Itoa(n)})...)
	require.Equal(t, 0, code, errOut)
	lines := parseAll(t, out)
	require.Len(t, lines, n, out)
	next := map[int]int64{}
	for _, l := range lines {
		p, ok := want[l.value]
		require.True(t, ok, "unexpected value %q", l.value)
		require.Equal(t, p, l.partition, "%q: its key's partition (or --partition)", l.value)
		require.Equal(t, next[l.partition], l.offset, "partition %d in offset order", l.partition)
		next[l.partition]++
		delete(want, l.value)
	}
	require.Empty(t, want, "every message printed once")

	out, _, code = runCLI(t, nil, append([]string{"group", "list"}, srv...)...)
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^GROUP\s+TOPIC\s+MEMBERS$`, out)
	require.Regexp(t, `(?m)^g\s+orders\s+0$`, out)

	out, _, code = runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
	require.Equal(t, 0, code)
	require.Contains(t, out, "mode = offset")
	require.Contains(t, out, "members = 0")
	rows := describeRows(t, out)
	require.Len(t, rows, 3, out)
	for p, r := range rows {
		require.Equal(t, []string{"-", strconv.FormatInt(next[p], 10), strconv.FormatInt(next[p], 10), "0", "-"}, r,
			"partition %d: committed up to its end\n%s", p, out)
	}
	require.Regexp(t, `(?m)^total lag 0$`, out)

	_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "g", "--to", "earliest"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	out, _, _ = runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
	for p, r := range describeRows(t, out) {
		end := strconv.FormatInt(next[p], 10)
		require.Equal(t, []string{"-", "0", end, end, "-"}, r, "partition %d after the reset\n%s", p, out)
	}
	require.Regexp(t, fmt.Sprintf(`(?m)^total lag %d$`, n), out)

	// -n stops within a batch: the member must not commit what it did not
	// print. Every offset below a committed one was printed.
	out, errOut, code = runCLIFor(t, 30*time.Second, slices.Concat(sub, []string{"-n", "3"})...)
	require.Equal(t, 0, code, errOut)
	got := map[[2]int64]bool{}
	for _, l := range parseAll(t, out) {
		got[[2]int64{int64(l.partition), l.offset}] = true
	}
	require.Len(t, got, 3, out)
	out, _, _ = runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
	for p, r := range describeRows(t, out) {
		committed, err := strconv.ParseInt(r[1], 10, 64)
		require.NoError(t, err, out)
		for o := range committed {
			require.True(t, got[[2]int64{int64(p), o}], "partition %d offset %d committed but not printed\n%s", p, o, out)
		}
	}

	// A reset while a member runs is refused, clearly.
	member := exec.Command(binary, sub...)
	var memberOut, memberErr syncBuffer
	member.Stdout, member.Stderr = &memberOut, &memberErr
	require.NoError(t, member.Start())
	exited := make(chan error, 1)
	go func() { exited <- member.Wait() }()
	t.Cleanup(func() {
		_ = member.Process.Kill()
		if t.Failed() {
			t.Logf("member stderr:\n%s", memberErr.String())
		}
	})
	require.Eventually(t, func() bool {
		out, _, _ := runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
		return strings.Contains(out, "members = 1")
	}, 10*time.Second, 20*time.Millisecond)
	_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "g", "--to", "latest"}, srv...)...)
	require.Equal(t, 1, code)
	require.Equal(t, "ratatoskr: group g has members; stop them first\n", errOut)

	// The member goes on from the commits and auto-commits, then leaves on
	// SIGTERM.
	require.Eventually(t, func() bool {
		out, _, _ := runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
		return strings.Contains(out, "\ntotal lag 0\n")
	}, 10*time.Second, 20*time.Millisecond, "the member consumes the rest")
	require.NoError(t, member.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, memberErr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("sub --group did not exit on SIGTERM")
	}
	out, _, _ = runCLI(t, nil, append([]string{"group", "describe", "g"}, srv...)...)
	require.Contains(t, out, "members = 0")
	require.Regexp(t, `(?m)^total lag 0$`, out)
	for _, l := range parseAll(t, memberOut.String()) {
		got[[2]int64{int64(l.partition), l.offset}] = true
	}
	require.Len(t, got, n, "between them, the two members printed everything")

	_, errOut, code = runCLI(t, nil, append([]string{"sub", "orders", "--group", "g", "--partition", "1"}, srv...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "--partition cannot be used with --group")
}

// groupMember is a `sub --group ... --print-offsets` subprocess whose
// output is parsed as it arrives.
type groupMember struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed

	mu    sync.Mutex
	lines []printed
	bad   []string // lines that do not parse
}

func startGroupMember(t *testing.T, name string, args ...string) *groupMember {
	t.Helper()
	m := &groupMember{name: name, cmd: exec.Command(binary, args...), stderr: &syncBuffer{}, exited: make(chan struct{})}
	m.cmd.Stderr = m.stderr
	stdout, err := m.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, m.cmd.Start())
	go func() {
		m.read(stdout)
		m.err = m.cmd.Wait() // after the reads, as StdoutPipe requires
		close(m.exited)
	}()
	t.Cleanup(func() {
		_ = m.cmd.Process.Kill()
		<-m.exited
		if t.Failed() {
			t.Logf("%s stderr:\n%s", m.name, m.stderr)
		}
	})
	return m
}

func (m *groupMember) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		f := strings.SplitN(line, " ", 3)
		var l printed
		var err1, err2 error
		if len(f) == 3 {
			l.partition, err1 = strconv.Atoi(f[0])
			l.offset, err2 = strconv.ParseInt(f[1], 10, 64)
			l.value = f[2]
		}
		m.mu.Lock()
		if len(f) != 3 || err1 != nil || err2 != nil {
			m.bad = append(m.bad, line)
		} else {
			m.lines = append(m.lines, l)
		}
		m.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

func (m *groupMember) snapshot() []printed {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lines)
}

// stop sends SIGTERM and waits for a clean exit.
func (m *groupMember) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, m.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-m.exited:
		require.NoError(t, m.err, "%s exits cleanly on SIGTERM\n%s", m.name, m.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit on SIGTERM\n%s", m.name, m.stderr)
	}
}

// ownership reports whether the group has exactly members members and each
// owns between lo and hi partitions, no partition unowned.
func ownership(info client.GroupInfo, members, lo, hi int) bool {
	if len(info.Members) != members {
		return false
	}
	count := map[string]int{}
	for _, p := range info.Partitions {
		if !slices.Contains(info.Members, p.Owner) {
			return false
		}
		count[p.Owner]++
	}
	for _, id := range info.Members {
		if count[id] < lo || count[id] > hi {
			return false
		}
	}
	return true
}

// TestGroupMemberKilled: three `sub --group` processes share a topic while
// the test publishes; one is killed with SIGKILL. Its partitions must move
// to the two others within the session timeout (at once, in fact: the
// kernel closes its socket), and the group must be at least once: no
// message lost, duplicates only from the uncommitted window of the killed
// member, no survivor printing an offset twice, each partition in order.
func TestGroupMemberKilled(t *testing.T) {
	const (
		topic          = "killed"
		partitions     = 6
		sessionTimeout = 3 * time.Second
	)
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	logsOnFailure(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, s.addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: partitions}))

	// Publish unique values "m<seq>", keyed by seq so every partition gets
	// some, about 10k a second, until stopped.
	var published atomic.Int64
	stopPub := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		seq := int64(0)
		for {
			for range 100 {
				v := "m" + strconv.FormatInt(seq, 10)
				if err := c.PublishAsync(ctx, topic, client.Message{Key: []byte(v), Value: []byte(v)}); err != nil {
					pubDone <- err
					return
				}
				seq++
			}
			if err := c.Flush(ctx); err != nil {
				pubDone <- err
				return
			}
			published.Store(seq)
			select {
			case <-stopPub:
				pubDone <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	stopPublishing := sync.OnceValue(func() error {
		close(stopPub)
		return <-pubDone
	})
	t.Cleanup(func() { _ = stopPublishing() })

	args := []string{"sub", topic, "--group", "g", "--ack", "offset", "--from", "earliest", "--print-offsets",
		"--commit-interval", "100ms", "--session-timeout", sessionTimeout.String(), "--server", s.addr}
	var members []*groupMember
	for i := range 3 {
		members = append(members, startGroupMember(t, fmt.Sprintf("member %d", i), args...))
	}
	describe := func() client.GroupInfo {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		info, err := c.DescribeGroup(dctx, "g")
		if err != nil {
			return client.GroupInfo{}
		}
		return info
	}
	var info client.GroupInfo
	require.Eventually(t, func() bool {
		info = describe()
		return ownership(info, 3, 2, 2)
	}, 30*time.Second, 20*time.Millisecond, "three members owning two partitions each: %+v", &info)

	// Let every member print something, and the killed one get ahead of
	// its last commit by a random amount.
	require.Eventually(t, func() bool {
		for _, m := range members {
			if len(m.snapshot()) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "every member prints")
	time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond) // a random kill point, under test: not a wait

	killed, survivors := members[0], members[1:]
	require.NoError(t, killed.cmd.Process.Kill())
	killedAt := time.Now()
	select {
	case <-killed.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGKILL did not end the member")
	}
	var moved time.Duration
	require.Eventually(t, func() bool {
		info = describe()
		moved = time.Since(killedAt)
		return ownership(info, 2, 3, 3)
	}, 30*time.Second, 10*time.Millisecond, "the survivors own all partitions: %+v", &info)
	t.Logf("partitions moved %v after SIGKILL", moved)
	require.Less(t, moved, sessionTimeout+time.Second, "rebalance after a killed member")

	// The survivors go on handling live traffic after the rebalance.
	printedBefore := make([]int, len(survivors))
	for i, m := range survivors {
		printedBefore[i] = len(m.snapshot())
	}
	require.Eventually(t, func() bool {
		for i, m := range survivors {
			if len(m.snapshot()) < printedBefore[i]+10 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the survivors print after the rebalance")
	require.NoError(t, stopPublishing())
	total := published.Load()
	tinfo, err := c.DescribeTopic(ctx, topic)
	require.NoError(t, err)
	ends := make([]int64, partitions)
	var sum int64
	for _, p := range tinfo.Partitions {
		ends[p.ID] = p.EndOffset
		sum += p.EndOffset
	}
	require.Equal(t, total, sum, "the log holds what was published")

	// Wait for the survivors to print everything: every offset below each
	// partition's end, in the union of all three outputs.
	missing := func() (n int, example string) {
		seen := make([]map[int64]bool, partitions)
		for p := range seen {
			seen[p] = map[int64]bool{}
		}
		for _, m := range members {
			for _, l := range m.snapshot() {
				if l.partition >= 0 && l.partition < partitions {
					seen[l.partition][l.offset] = true
				}
			}
		}
		for p, end := range ends {
			for o := range end {
				if !seen[p][o] {
					if n == 0 {
						example = fmt.Sprintf("partition %d offset %d", p, o)
					}
					n++
				}
			}
		}
		return n, example
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, example := missing()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never printed, e.g. %s\ngroup: %+v\nstderr:\n%s\n%s\n%s", n, total, example,
				describe(), killed.stderr, survivors[0].stderr, survivors[1].stderr)
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait on the members' output
	}
	for _, m := range survivors {
		m.stop(t)
	}
	info = describe()
	require.Empty(t, info.Members)
	for _, p := range info.Partitions {
		require.Equal(t, ends[p.Partition], p.Committed, "partition %d committed on close: %+v", p.Partition, info)
	}

	checkAtLeastOnce(t, members, killed, ends)
}

// checkAtLeastOnce checks the outputs of a group's members: each partition
// strictly increasing within a process, one value per offset, every offset
// below ends printed, and every offset printed twice printed once by the
// killed member.
func checkAtLeastOnce(t *testing.T, members []*groupMember, killed *groupMember, ends []int64) {
	t.Helper()
	type where struct {
		p int
		o int64
	}
	printers := map[where][]*groupMember{}
	values := map[where]string{}
	offsetOf := map[string]where{}
	for _, m := range members {
		m.mu.Lock()
		require.Empty(t, m.bad, "%s printed lines that do not parse", m.name)
		m.mu.Unlock()
		last := map[int]int64{}
		lines := m.snapshot()
		for _, l := range lines {
			w := where{l.partition, l.offset}
			require.True(t, l.partition >= 0 && l.partition < len(ends) && l.offset < ends[l.partition],
				"%s printed %+v, beyond the log", m.name, l)
			if prev, ok := last[l.partition]; ok {
				require.Greater(t, l.offset, prev, "%s: partition %d goes back", m.name, l.partition)
			}
			last[l.partition] = l.offset
			if v, ok := values[w]; ok {
				require.Equal(t, v, l.value, "offset %+v printed with two values", w)
			}
			values[w] = l.value
			if o, ok := offsetOf[l.value]; ok {
				require.Equal(t, o, w, "value %s at two offsets", l.value)
			}
			offsetOf[l.value] = w
			printers[w] = append(printers[w], m)
		}
		t.Logf("%s printed %d messages", m.name, len(lines))
	}
	dups := 0
	for p, end := range ends {
		for o := range end {
			w := where{p, o}
			by := printers[w]
			require.NotEmpty(t, by, "partition %d offset %d lost", p, o)
			if len(by) > 1 {
				dups++
				require.Len(t, by, 2, "partition %d offset %d printed by %d processes", p, o, len(by))
				require.True(t, by[0] == killed || by[1] == killed,
					"partition %d offset %d printed twice, not by the killed member: %s and %s", p, o, by[0].name, by[1].name)
			}
		}
	}
	t.Logf("%d messages printed twice, each by the killed member and a survivor", dups)
}
