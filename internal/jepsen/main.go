// Command jepsen is Ratatoskr's Jepsen-style fault test (make
// test-cluster): three real brokers, each in its own network namespace,
// a replicated topic under producers and consumers that follow each
// partition's leader, and a nemesis that kills, pauses, isolates,
// partitions, wipes (and replaces) and restarts nodes for minutes. Then it heals the
// cluster, waits until the replicas converge, reads every partition from
// its leader and from every replica's data directory, and checks the
// whole history (package checker): no acknowledged message lost, no two
// messages at one offset, one order everywhere.
//
// It needs root (network namespaces) and iproute2; it refuses to run
// without them. Everything it creates (processes, namespaces, links, its
// work directory unless -keep or a failure) is removed when it exits,
// on an error or Ctrl-C too. It exits 0 when the run was clean, 1 on a
// violation or a broker problem (a crash, a cluster that did not recover
// or converge), 2 when it could not run.
//
//	go run ./internal/jepsen -bin bin/ratatoskr -duration 5m [-seed N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
)

// config is the command line.
type config struct {
	bin        string
	duration   time.Duration
	seed       uint64
	topic      string
	partitions int
	producers  int // per partition
	faults     string
	dir        string
	keep       bool
	// retentionBytes bounds each partition of the topic (0: kept
	// forever); segmentBytes is the nodes' segment size (retention.go).
	retentionBytes, segmentBytes, catchUpBytes int64
}

func main() {
	os.Exit(runMain())
}

func parseFlags() config {
	var c config
	flag.StringVar(&c.bin, "bin", "bin/ratatoskr", "the broker binary")
	flag.DurationVar(&c.duration, "duration", 5*time.Minute, "how long the nemesis injects faults")
	flag.Uint64Var(&c.seed, "seed", 0, "the nemesis's random seed (0: from the clock); printed, to replay the choices")
	flag.StringVar(&c.topic, "topic", "jepsen", "the topic")
	flag.IntVar(&c.partitions, "partitions", 3, "partitions of the topic")
	flag.IntVar(&c.producers, "producers", 4, "producers per partition")
	flag.StringVar(&c.faults, "faults", strings.Join(faultNames(), ","), "the faults, comma-separated")
	flag.StringVar(&c.dir, "dir", "", "work directory (default: a new one under $TMPDIR); removed at the end unless -keep or a failure")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (node logs, data, history)")
	c.retentionBytes, c.segmentBytes = 1536<<10, 1<<20
	flag.Var((*size)(&c.retentionBytes), "retention-bytes",
		"the topic's retention_bytes: each replica removes its oldest segments past it, and nodes behind their leader's start install snapshots (0: keep forever)")
	flag.Var((*size)(&c.segmentBytes), "segment-bytes", "the nodes' --segment-bytes (1MiB..4GiB)")
	c.catchUpBytes = 256 << 10
	flag.Var((*size)(&c.catchUpBytes), "catchup-bytes",
		"the nodes' --catchup-bytes: a replica further behind fetches the batches whole (0: Raft entries only)")
	flag.Parse()
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c
}

// test is one run.
type test struct {
	cfg   config
	rng   *rand.Rand
	net   *network
	nodes []*node // by id - 1: the first three, then each replacement; a replaced node stays, retired
	bin   string
	start time.Time
	dir   string
	out   *os.File // events.log
	// unreplaced is the wiped node whose replacement did not finish (0:
	// none); no other node is wiped then. The nemesis's alone.
	unreplaced int
	// life is the whole run's context (Ctrl-C), for what must finish even
	// when the fault time is up: a replacement once begun.
	life context.Context

	mu       sync.Mutex
	injected map[string]int
	problems []string
	routers  []*router // the workload's: they follow the membership
	// replacements are the wiped nodes replaced: "old by new in Ns".
	replacements []string

	groups map[int]uint64 // each partition's Raft group
	snaps  map[snapKey]snapCount
}

// logf prints an event with the time since the start, and keeps it in
// the work directory's events.log.
func (t *test) logf(format string, args ...any) {
	line := fmt.Sprintf("[%7.1fs] %s", time.Since(t.start).Seconds(), fmt.Sprintf(format, args...))
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Println(line)
	if t.out != nil {
		_, _ = fmt.Fprintln(t.out, line)
	}
}

// problem records a finding about the broker that is not a violation of
// the checked properties: a crash, a cluster that did not recover.
func (t *test) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.logf("PROBLEM %s", msg)
	t.mu.Lock()
	t.problems = append(t.problems, fmt.Sprintf("[%.1fs] %s", time.Since(t.start).Seconds(), msg))
	t.mu.Unlock()
}

func (t *test) count(name string) {
	t.mu.Lock()
	t.injected[name]++
	t.mu.Unlock()
}

// live returns the nodes not retired (wiped and replaced): the cluster
// the faults and checks are about.
func (t *test) live() []*node {
	var out []*node
	for _, n := range t.nodes {
		if !n.isRetired() {
			out = append(out, n)
		}
	}
	return out
}

// snapshot asks every running, unpaused node for its view of the cluster.
func (t *test) snapshot(ctx context.Context) view {
	v := view{reports: map[int]httpapi.Cluster{}, out: map[int]bool{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range t.nodes {
		if n.isRetired() {
			v.out[n.id] = true
			continue
		}
		if !n.running() || n.isPaused() {
			continue
		}
		wg.Go(func() {
			started := n.startedAt()
			if r, err := status(ctx, n); err == nil {
				t.noteSnapshots(n, started, r)
				mu.Lock()
				v.reports[n.id] = r
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return v
}

// waitView polls the cluster until cond says nothing is missing ("") or
// d passes; it returns the last reason.
func (t *test) waitView(ctx context.Context, d time.Duration, cond func(view) string) string {
	deadline := time.Now().Add(d)
	for {
		reason := cond(t.snapshot(ctx))
		if reason == "" || time.Now().After(deadline) || ctx.Err() != nil {
			return reason
		}
		pace(ctx, 200*time.Millisecond)
	}
}

// runMain runs the test and returns the exit code.
func runMain() int {
	cfg := parseFlags()
	var kinds []fault
	for _, name := range strings.Split(cfg.faults, ",") {
		all := allFaults()
		i := slices.IndexFunc(all, func(f fault) bool { return f.name == strings.TrimSpace(name) })
		if i < 0 {
			fmt.Fprintf(os.Stderr, "jepsen: unknown fault %q; the faults are %s\n", name, strings.Join(faultNames(), ","))
			return 2
		}
		kinds = append(kinds, all[i])
	}
	if err := preflight(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		return 2
	}
	unlock, err := lock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		return 2
	}
	defer unlock()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t, err := newTest(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		return 2
	}
	code := t.run(ctx, kinds)
	if ctx.Err() != nil {
		fmt.Println("jepsen: interrupted")
		code = 2
	}
	t.cleanup(code == 0 && !cfg.keep)
	return code
}

// preflight refuses to start without root, iproute2 and the broker.
func preflight(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates network namespaces (CI runs as root; locally: sudo make test-cluster)")
	}
	if err := checkSizes(cfg); err != nil {
		return err
	}
	if err := checkNetns(); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.bin); err != nil {
		return fmt.Errorf("the broker binary: %w (make build)", err)
	}
	return nil
}

// lock makes sure one run at a time uses the namespaces.
func lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "ratatoskr-jepsen.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, errors.New("another run holds " + f.Name())
	}
	return func() { _ = f.Close() }, nil
}

func newTest(cfg config) (*test, error) {
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return nil, err
	}
	dir := cfg.dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "ratatoskr-jepsen-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, err
	}
	t := &test{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed>>1|1)), net: &network{}, bin: bin,
		start: time.Now(), dir: dir, injected: map[string]int{}, groups: map[int]uint64{}, life: context.Background(),
		snaps: map[snapKey]snapCount{}}
	if t.out, err = os.Create(filepath.Join(dir, "events.log")); err != nil {
		return nil, err
	}
	peers := peerList([]int{1, 2, 3})
	for range 3 {
		if _, err := t.addNode(peers); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// addNode adds a node (not started) under the next id, with --peers
// peers: every node's for the first three, the members' (not its own)
// for a replacement, which joins the running cluster.
func (t *test) addNode(peers string) (*node, error) {
	id := len(t.nodes) + 1
	if id > maxNodeID {
		return nil, fmt.Errorf("node id %d: no address left", id)
	}
	n := &node{id: id, bin: t.bin, dir: filepath.Join(t.dir, fmt.Sprintf("n%d", id)), peer: peers, log: t.logf,
		args: brokerArgs(t.cfg.segmentBytes, t.cfg.catchUpBytes)}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, err
	}
	t.nodes = append(t.nodes, n)
	return n, nil
}

// node returns node id (ids are never reused).
func (t *test) node(id int) *node {
	if id < 1 || id > len(t.nodes) {
		panic(fmt.Sprintf("jepsen: no node %d", id))
	}
	return t.nodes[id-1]
}

// peerList is a --peers value: the nodes' ids and cluster addresses.
func peerList(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprintf("%d=%s:%s", id, nodeIP(id), clusterPort)
	}
	return strings.Join(s, ",")
}

// track registers a workload router: it learns the nodes that join and
// forgets the ones replaced.
func (t *test) track(r *router) {
	t.mu.Lock()
	t.routers = append(t.routers, r)
	t.mu.Unlock()
}

// trackedRouters returns the routers registered with track.
func (t *test) trackedRouters() []*router {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.routers)
}

// cleanup kills every node and removes the namespaces, and the work
// directory when asked.
func (t *test) cleanup(removeDir bool) {
	for _, n := range t.nodes {
		if n.running() {
			_ = n.kill()
		}
	}
	t.net.cleanup()
	_ = t.out.Close()
	if removeDir {
		_ = os.RemoveAll(t.dir)
	} else {
		fmt.Println("jepsen: kept", t.dir, "(events.log, history, node logs and data)")
	}
}
