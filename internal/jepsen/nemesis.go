package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The nemesis: one fault at a time, each injected, held for a while and
// healed; then the cluster must become healthy again (every node up and
// reachable, a leader agreed for the controller and every partition)
// and stays undisturbed for a few seconds before the next fault. Faults
// are drawn from a shuffled round of every kind, so a run of a few
// minutes injects each kind at least once; the seed fixes the choices
// (kinds, nodes, hold times), not the timing.

// fault is one kind of fault: inject does everything up to and including
// its own undoing (a node killed is restarted, a partition healed).
type fault struct {
	name   string
	about  string
	inject func(t *test, ctx context.Context) error
}

// allFaults returns every kind of fault.
func allFaults() []fault {
	return []fault{
		{"kill", "SIGKILL a random node, restart it 1-5 s later", (*test).faultKill},
		{"kill-all", "SIGKILL every node at once, restart them all 1-3 s later", (*test).faultKillAll},
		{"pause-leader", "SIGSTOP a partition's leader for 3-10 s, then SIGCONT", (*test).faultPause},
		{"isolate-leader", "take a partition leader's link down (no peer, no client reaches it) for 4-12 s", (*test).faultIsolate},
		{"partition-leader", "cut a partition leader off the other nodes (clients still reach it): leader in the minority, 4-12 s", (*test).faultPartitionLeader},
		{"partition-follower", "cut a follower of a partition off the other nodes: the majority keeps the leader, 4-12 s", (*test).faultPartitionFollower},
		{"partition-ring", "cut only the link between a partition leader and one follower: every node still sees a majority, not the same one, 4-12 s", (*test).faultRing},
		{"wipe", "SIGKILL a node, delete its whole data directory, restart it empty under its old id; the others must refuse it; then replace it under a new id (add-node, remove-node, rebalance)", (*test).faultWipe},
		{"rolling-restart", "restart every node in turn (SIGTERM, graceful), each once the cluster is healthy again", (*test).faultRolling},
	}
}

func faultNames() []string {
	fs := allFaults()
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// nemesis injects faults until ctx ends.
func (t *test) nemesis(ctx context.Context, kinds []fault) {
	var round []fault
	for ctx.Err() == nil {
		if len(round) == 0 {
			round = slices.Clone(kinds)
			t.rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		f := round[0]
		round = round[1:]
		t.logf("fault %s: %s", f.name, f.about)
		switch err := f.inject(t, ctx); {
		case errors.Is(err, errSkipped): // said why; not counted
		case err != nil:
			t.count(f.name)
			t.problem("fault %s: %v", f.name, err)
		default:
			t.count(f.name)
		}
		t.heal()
		t.recover(ctx, "after "+f.name)
		t.hold(ctx, 3, 6)
	}
}

// recover waits until the cluster is healthy, restarting (at most every
// 5 s) a node that crashed meanwhile, and records a problem when it is
// not healthy within a minute. It reports whether it is healthy.
func (t *test) recover(ctx context.Context, why string) bool {
	start := time.Now()
	if reason := t.waitView(ctx, time.Minute, func(v view) string {
		t.restartCrashed()
		return v.healthy(len(t.live()), t.cfg.partitions, t.cfg.topic)
	}); reason != "" {
		if ctx.Err() == nil {
			t.problem("not healthy a minute %s: %s", why, reason)
		}
		return false
	}
	t.logf("healthy %.1fs %s", time.Since(start).Seconds(), why)
	return true
}

// restartCrashed starts the nodes that are down, each at most every 5 s
// (a node that crashes at each start is restarted on and on, until what
// makes it crash goes away).
func (t *test) restartCrashed() {
	for _, n := range t.live() {
		if !n.running() && time.Since(n.startedAt()) > 5*time.Second {
			t.logf("start node %d (it was down)", n.id)
			if err := n.start(); err != nil {
				t.problem("start node %d: %v", n.id, err)
			}
		}
	}
}

// hold waits a random time from lo to hi seconds, or until ctx ends.
func (t *test) hold(ctx context.Context, lo, hi float64) {
	d := time.Duration((lo + t.rng.Float64()*(hi-lo)) * float64(time.Second))
	pace(ctx, d)
}

func (t *test) randomNode() *node {
	live := t.live()
	return live[t.rng.IntN(len(live))]
}

// leader returns the leader of a random partition, or a random node
// (saying so) when the cluster agrees on none.
func (t *test) leader(ctx context.Context) (*node, int) {
	p := t.rng.IntN(t.cfg.partitions)
	if id, err := t.snapshot(ctx).leader(t.cfg.topic, p); err == nil {
		return t.node(id), p
	}
	n := t.randomNode()
	t.logf("no agreed leader of partition %d; taking node %d", p, n.id)
	return n, p
}

func (t *test) others(n *node) []*node {
	var out []*node
	for _, o := range t.live() {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

func (t *test) faultKill(ctx context.Context) error {
	n := t.randomNode()
	t.logf("kill -9 node %d", n.id)
	if err := n.kill(); err != nil {
		return err
	}
	t.hold(ctx, 1, 5)
	t.logf("start node %d", n.id)
	return n.start()
}

func (t *test) faultKillAll(ctx context.Context) error {
	t.logf("kill -9 every node")
	for _, n := range t.live() {
		if err := n.kill(); err != nil {
			return err
		}
	}
	t.hold(ctx, 1, 3)
	t.logf("start every node")
	for _, n := range t.live() {
		if !n.running() {
			if err := n.start(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *test) faultPause(ctx context.Context) error {
	n, p := t.leader(ctx)
	t.logf("SIGSTOP node %d (leads partition %d)", n.id, p)
	if _, err := n.signal(syscall.SIGSTOP, false); err != nil {
		return err
	}
	t.hold(ctx, 3, 10)
	t.logf("SIGCONT node %d", n.id)
	_, err := n.signal(syscall.SIGCONT, false)
	return err
}

func (t *test) faultIsolate(ctx context.Context) error {
	n, p := t.leader(ctx)
	t.logf("link down: node %d (leads partition %d)", n.id, p)
	if err := t.net.isolate(n.id, true); err != nil {
		return err
	}
	t.hold(ctx, 4, 12)
	t.logf("link up: node %d", n.id)
	return t.net.isolate(n.id, false)
}

// cutOff cuts n from every other node, holds, and heals.
func (t *test) cutOff(ctx context.Context, n *node, why string) error {
	t.logf("partition: {%d} | {%s} (%s)", n.id, ids(t.others(n)), why)
	for _, o := range t.others(n) {
		if err := t.net.cut(n.id, o.id); err != nil {
			return err
		}
	}
	t.hold(ctx, 4, 12)
	t.logf("heal the partition")
	return t.net.heal()
}

func (t *test) faultPartitionLeader(ctx context.Context) error {
	n, p := t.leader(ctx)
	return t.cutOff(ctx, n, fmt.Sprintf("node %d leads partition %d", n.id, p))
}

func (t *test) faultPartitionFollower(ctx context.Context) error {
	l, p := t.leader(ctx)
	others := t.others(l)
	n := others[t.rng.IntN(len(others))]
	return t.cutOff(ctx, n, fmt.Sprintf("node %d leads partition %d", l.id, p))
}

func (t *test) faultRing(ctx context.Context) error {
	l, p := t.leader(ctx)
	others := t.others(l)
	f := others[t.rng.IntN(len(others))]
	t.logf("cut the link %d-%d only (node %d leads partition %d)", l.id, f.id, l.id, p)
	if err := t.net.cut(l.id, f.id); err != nil {
		return err
	}
	t.hold(ctx, 4, 12)
	t.logf("heal the partition")
	return t.net.heal()
}

// errSkipped is a fault's answer when it did nothing (it said why).
var errSkipped = errors.New("skipped")

// faultWipe deletes a node's data and starts it again, empty, under its
// old id: the other nodes must refuse it (it is not the data directory
// they met, engine/identity.go), so that it is sent no Raft message (etcd
// raft used to panic on them) and counts towards no quorum. It waits for a
// healthy cluster first; the node must keep running, be refused (its log
// says so) for 5 s, and have learned nothing. Then it is replaced as
// docs/CLUSTER.md tells an operator to (replace), and the run goes on
// with three nodes again: a later wipe may hit the new node too.
func (t *test) faultWipe(ctx context.Context) error {
	if t.unreplaced != 0 {
		t.logf("wipe skipped: node %d's replacement did not finish", t.unreplaced)
		return errSkipped
	}
	if !t.recover(ctx, "before the wipe") {
		t.logf("wipe skipped: the cluster is not healthy")
		return errSkipped
	}
	n := t.randomNode()
	t.logf("kill -9 node %d, delete its data directory, start it empty under its old id: the others must refuse it", n.id)
	if err := n.kill(); err != nil {
		return err
	}
	if err := n.wipe(); err != nil {
		return err
	}
	// From here on the fault is seen through even when the fault time is
	// up meanwhile (a half-made replacement is no cluster to read back);
	// only Ctrl-C cuts it short. Whatever the refusal check found, the
	// node lost its data: it is replaced.
	err := n.start()
	if err == nil {
		err = t.refused(t.life, n)
	}
	return errors.Join(err, t.replace(t.life, n))
}

// refused waits until the others refuse the wiped node n (its log says
// so), and 5 s more; n must keep running, and have learned nothing.
func (t *test) refused(ctx context.Context, n *node) error {
	start := time.Now()
	var refused time.Time
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !n.running() {
			return fmt.Errorf("wiped node %d crashed after its restart: %s", n.id, n.lastWords())
		}
		if refused.IsZero() && (n.logged("not admitted") || t.othersRefuse(n)) {
			refused = time.Now()
			t.logf("wiped node %d refused by the others after %.1fs", n.id, refused.Sub(start).Seconds())
		}
		if !refused.IsZero() && time.Since(refused) > 5*time.Second {
			break
		}
		if refused.IsZero() && time.Since(start) > time.Minute {
			return fmt.Errorf("wiped node %d was not refused within a minute: %s", n.id, n.lastWords())
		}
		pace(ctx, 200*time.Millisecond)
	}
	if r, err := status(ctx, n); err == nil && (r.Controller.Leader != 0 || len(r.Partitions) > 0) {
		return fmt.Errorf("wiped node %d took part: it knows controller leader %d and %d partitions", n.id,
			r.Controller.Leader, len(r.Partitions))
	}
	return nil
}

// othersRefuse reports whether another member's log says it refused node
// n when it dialed it. The wiped node's own log says so only when it is
// the one that dials; it dials only its --peers, which may all have been
// replaced since it started (a node id is wiped once: it is then retired).
func (t *test) othersRefuse(n *node) bool {
	for _, m := range t.live() {
		if m != n && m.logged(fmt.Sprintf("does not admit node %d (", n.id)) {
			return true
		}
	}
	return false
}

// replace replaces node old, which lost its data, as docs/CLUSTER.md
// ("Replacing a node, and a lost disk") tells an operator to, with the
// ratatoskr CLI at a member: stop old (its machine goes: its namespace
// too); start a new node under the next id with an empty data directory,
// the members as --peers and its own namespace; add-node it and wait until
// it is active; remove-node old --wait; rebalance. The workload's routers
// forget old and learn the new node. It is done when the cluster is
// healthy with the new node in old's place: every partition's replicas
// are the three members, all voters of its group.
func (t *test) replace(ctx context.Context, old *node) error {
	t.unreplaced = old.id
	old.retire()
	if err := old.kill(); err != nil {
		return err
	}
	for _, r := range t.trackedRouters() {
		r.forget(old.id)
	}
	if err := t.net.remove(old.id); err != nil {
		return err
	}
	members := t.live()
	n, err := t.addNode(peerList(idsOf(members)))
	if err != nil {
		return err
	}
	if err := t.net.add(n.id); err != nil {
		return err
	}
	begin := time.Now()
	t.logf("replace node %d: start node %d (empty, --peers %s)", old.id, n.id, n.peer)
	if err := n.start(); err != nil {
		return err
	}
	at := members[t.rng.IntN(len(members))]
	if err := t.admin(ctx, at, "add-node", strconv.Itoa(n.id), "--cluster-addr", n.clusterAddr()); err != nil {
		return err
	}
	if why := t.waitView(ctx, 2*time.Minute, func(v view) string {
		t.restartCrashed()
		if st, err := v.nodeStatus(n.id); err != nil || st != nodeActive {
			return fmt.Sprintf("node %d is not active (%q, %v)", n.id, st, err)
		}
		return ""
	}); why != "" {
		return fmt.Errorf("node %d not active two minutes after add-node: %s", n.id, why)
	}
	t.logf("node %d active %.1fs after its start", n.id, time.Since(begin).Seconds())
	for _, r := range t.trackedRouters() {
		if err := r.learn(ctx, n); err != nil {
			return err
		}
	}
	if err := t.admin(ctx, at, "remove-node", strconv.Itoa(old.id), "--wait", "10m"); err != nil {
		return err
	}
	if err := t.admin(ctx, at, "rebalance"); err != nil {
		return err
	}
	if why := t.waitView(ctx, 5*time.Minute, func(v view) string {
		t.restartCrashed()
		return v.replaced(old.id, len(t.live()), t.cfg.partitions, t.cfg.topic)
	}); why != "" {
		return fmt.Errorf("node %d not replaced by node %d within 5 minutes of the rebalance: %s", old.id, n.id, why)
	}
	t.unreplaced = 0
	took := time.Since(begin)
	t.logf("node %d replaced by node %d in %.1fs; members %s", old.id, n.id, took.Seconds(), ids(t.live()))
	t.mu.Lock()
	t.replacements = append(t.replacements, fmt.Sprintf("%d by %d in %.0fs", old.id, n.id, took.Seconds()))
	t.mu.Unlock()
	return nil
}

// admin runs `ratatoskr cluster <args>` against node at's HTTP API, as an
// operator would, logging what it prints as it prints it.
func (t *test) admin(ctx context.Context, at *node, args ...string) error {
	args = append([]string{"cluster"}, args...)
	args = append(args, "--http-addr", at.httpAddr())
	cmd := exec.CommandContext(ctx, t.bin, args...)
	cmd.Env = append(os.Environ(), "RATATOSKR_ADMIN_TOKEN="+adminToken)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	t.logf("ratatoskr %s", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return err
	}
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if l := strings.TrimSpace(lines.Text()); l != "" {
			t.logf("  %s", l)
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("ratatoskr %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func (t *test) faultRolling(ctx context.Context) error {
	live := t.live()
	perm := t.rng.Perm(len(live))
	for k := 0; k < len(perm) && ctx.Err() == nil; k++ {
		n := live[perm[k]]
		t.logf("restart node %d (SIGTERM)", n.id)
		if err := n.stop(20 * time.Second); err != nil {
			t.problem("rolling restart: %v", err)
		}
		if err := n.start(); err != nil {
			return err
		}
		t.recover(ctx, fmt.Sprintf("after restarting node %d", n.id))
	}
	return nil
}

// heal undoes every fault: links up, partitions gone, paused nodes
// resumed, stopped nodes started.
func (t *test) heal() {
	if err := t.net.heal(); err != nil {
		t.problem("heal the network: %v", err)
	}
	for _, n := range t.live() {
		if n.isPaused() {
			_, _ = n.signal(syscall.SIGCONT, false)
		}
		if !n.running() {
			t.logf("start node %d (it was down)", n.id)
			if err := n.start(); err != nil {
				t.problem("start node %d: %v", n.id, err)
			}
		}
	}
}

func ids(ns []*node) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n.id)
	}
	return strings.Join(s, ",")
}

func idsOf(ns []*node) []int {
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = n.id
	}
	return out
}
