package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
)

// run sets the cluster up, runs the workload under the nemesis, reads
// everything back and checks it. It returns the exit code.
func (t *test) run(ctx context.Context, kinds []fault) int {
	t.logf("seed %d, %v of faults (%s), work directory %s", t.cfg.seed, t.cfg.duration, faultList(kinds), t.dir)
	t.life = ctx
	if err := t.setup(ctx); err != nil {
		t.logf("SETUP FAILED: %v", err)
		return 2
	}
	rec := &recorder{start: t.start}
	wctx, stopWork := context.WithCancel(context.Background())
	wait, err := t.workload(ctx, wctx, rec)
	if err != nil {
		stopWork()
		t.logf("SETUP FAILED: %v", err)
		return 2
	}
	progress := t.progress(wctx, rec)
	began := time.Now()
	nctx, cancel := context.WithTimeout(ctx, t.cfg.duration)
	t.nemesis(nctx, kinds)
	cancel()
	faulted := time.Since(began)
	t.logf("faults over; healing")
	t.heal()
	t.recover(ctx, "after the last fault")
	stopWork()
	wait()
	progress()
	loaded := time.Since(began)
	if ctx.Err() != nil {
		return 2
	}
	converged := t.converge(ctx)
	h, err := t.readBack(ctx, rec)
	if err != nil {
		t.problem("reading the logs back: %v", err)
	}
	return t.report(h, faulted, loaded, converged)
}

// setup starts the network and the nodes and creates the topic.
func (t *test) setup(ctx context.Context) error {
	if err := t.net.setup(len(t.nodes)); err != nil {
		return err
	}
	for _, n := range t.nodes {
		if err := n.start(); err != nil {
			return err
		}
	}
	if why := t.waitView(ctx, time.Minute, func(v view) string {
		return v.healthy(len(t.nodes), 0, t.cfg.topic)
	}); why != "" {
		return errors.New("the cluster did not form within a minute: " + why)
	}
	c, err := client.Dial(ctx, t.nodes[0].addr())
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	// The default replica count of a cluster of three is 3; neither the
	// client, the CLI nor the admin API can ask for it (only the wire
	// protocol's replicas key can), so the replica sets are checked below.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	retain := client.UnboundedBytes
	if t.cfg.retentionBytes > 0 {
		retain = t.cfg.retentionBytes
	}
	if err := c.CreateTopic(cctx, t.cfg.topic, client.TopicConfig{Partitions: t.cfg.partitions, Storage: "disk",
		Fsync: "always", Retention: client.KeepForever, RetentionBytes: retain}); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if why := t.waitView(ctx, time.Minute, func(v view) string {
		return v.healthy(len(t.nodes), t.cfg.partitions, t.cfg.topic)
	}); why != "" {
		return errors.New("the topic's partitions have no leaders after a minute: " + why)
	}
	for _, p := range t.snapshot(ctx).reports[1].Partitions {
		if len(p.Replicas) != len(t.nodes) || p.Local == nil {
			return fmt.Errorf("partition %d has replicas %v, want all %d nodes", p.Partition, p.Replicas, len(t.nodes))
		}
		t.groups[p.Partition] = p.Local.Group
	}
	t.logf("cluster up: 3 nodes, topic %s with %d partitions, 3 replicas each, fsync=always, retention_bytes %s (segments of %s)",
		t.cfg.topic, t.cfg.partitions, formatSize(t.cfg.retentionBytes), formatSize(t.cfg.segmentBytes))
	return nil
}

// workload starts the producers and consumers; wait stops waits for them
// to finish once wctx ends, then closes their clients.
func (t *test) workload(ctx, wctx context.Context, rec *recorder) (wait func(), err error) {
	prod, err := dialAll(ctx, t.nodes, t.cfg.partitions)
	if err != nil {
		return nil, err
	}
	cons, err := dialAll(ctx, t.nodes, t.cfg.partitions)
	if err != nil {
		prod.close()
		return nil, err
	}
	t.track(prod)
	t.track(cons)
	var wg sync.WaitGroup
	for p := range t.cfg.partitions {
		for i := range t.cfg.producers {
			id := p*t.cfg.producers + i + 1
			wg.Go(func() { producer(wctx, id, p, t.cfg.topic, prod, rec) })
		}
		wg.Go(func() { consumer(wctx, p, t.cfg.topic, cons, rec) })
		wg.Go(func() { laggard(wctx, p, t.cfg.topic, cons, rec) })
	}
	t.logf("workload: %d producers per partition (unique values, explicit partitions), a fetching consumer per partition",
		t.cfg.producers)
	groups := t.groupWorkload(wctx, rec) // groups.go
	return func() {
		wg.Wait()
		groups()
		prod.close()
		cons.close()
	}, nil
}

// progress prints the counters every 15 s until ctx ends; the function
// it returns waits for the last line.
func (t *test) progress(ctx context.Context, rec *recorder) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				a := rec.acked.Load()
				t.logf("progress: %d acked (%.0f/s), %d refused, %d unknown, %d delivered, %d consumer jumps",
					a, float64(a-last)/now.Sub(lastAt).Seconds(), rec.failed.Load(), rec.unknown.Load(), rec.delivered.Load(),
					rec.jumps.Load())
				last, lastAt = a, now
			}
		}
	}()
	return func() { <-done }
}

// converge waits (up to two minutes) until every replica of every
// partition has committed everything and the same.
func (t *test) converge(ctx context.Context) bool {
	start := time.Now()
	why := t.waitView(ctx, 2*time.Minute, func(v view) string {
		t.restartCrashed()
		return v.converged(len(t.live()), t.cfg.partitions, t.cfg.topic)
	})
	if why != "" {
		t.problem("the replicas did not converge within two minutes of healing: %s", why)
		return false
	}
	t.logf("replicas converged in %.1fs", time.Since(start).Seconds())
	return true
}

// readBack reads every partition whole from its leader, then stops the
// nodes and reads every replica's log from its data directory.
func (t *test) readBack(ctx context.Context, rec *recorder) (*checker.History, error) {
	h := &rec.h
	v := t.snapshot(ctx)
	var errs []error
	for p := range t.cfg.partitions {
		r, err := t.leaderRead(ctx, v, p)
		for try := 0; err != nil && try < 10 && ctx.Err() == nil; try++ {
			// The leadership may move after the snapshot: once the
			// cluster is healthy, the leader balance hands it back to
			// the preferred node. Ask the nodes again.
			t.logf("partition %d: %v; asking the nodes again", p, err)
			time.Sleep(time.Second)
			v = t.snapshot(ctx)
			r, err = t.leaderRead(ctx, v, p)
		}
		if err != nil {
			errs = append(errs, err)
		}
		if r != nil {
			h.Reads = append(h.Reads, *r)
		}
	}
	t.logf("stopping the nodes")
	for _, n := range t.nodes {
		if n.running() {
			if err := n.stop(20 * time.Second); err != nil {
				t.problem("final stop: %v", err)
			}
		}
	}
	scratch := filepath.Join(t.dir, "offline")
	defer func() { _ = os.RemoveAll(scratch) }()
	for p := range t.cfg.partitions {
		for _, n := range t.live() {
			r, err := t.replicaRead(v, n, p, scratch)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			h.Reads = append(h.Reads, r)
		}
	}
	return h, errors.Join(errs...)
}

// leaderRead reads partition p whole from its leader (the node claiming
// it in the highest term: with the workload stopped and the network
// healed, it holds every committed entry). It is final (must hold every
// ack) when the leader had committed all it held.
func (t *test) leaderRead(ctx context.Context, v view, p int) (*checker.Read, error) {
	l, g, err := v.claimedLeader(t.cfg.topic, p)
	if err != nil {
		return nil, fmt.Errorf("no leader read of partition %d: %w", p, err)
	}
	c, err := client.Dial(ctx, t.node(l).addr())
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	start, recs, err := readAll(ctx, c, t.cfg.topic, p)
	if err != nil {
		return nil, fmt.Errorf("read partition %d from its leader %d: %w", p, l, err)
	}
	t.logf("partition %d: %d messages at its leader, node %d, from offset %d", p, len(recs), l, start)
	return &checker.Read{Source: fmt.Sprintf("a fetch from leader %d", l), Topic: t.cfg.topic,
		Partition: int32(p), Start: start, Records: recs, Final: g.Commit == g.LastIndex}, nil
}

// replicaRead reads node n's replica of partition p from its data
// directory: what the node last reported committed, or (when it did not
// report) what its own meta file says is committed. It is final when the
// node had committed as much as the leader, and the leader all it held.
func (t *test) replicaRead(v view, n *node, p int, scratch string) (checker.Read, error) {
	r := checker.Read{Source: fmt.Sprintf("node %d's data directory", n.id), Topic: t.cfg.topic, Partition: int32(p)}
	var commit uint64
	if g, ok := v.local(n.id, t.cfg.topic, p); ok {
		commit = g.Commit
		if _, lg, err := v.claimedLeader(t.cfg.topic, p); err == nil {
			r.Final = g.Commit == lg.Commit && lg.Commit == lg.LastIndex
		}
	}
	group := t.groups[p]
	rl, err := readReplica(groupDir(n, group), filepath.Join(scratch, fmt.Sprintf("n%d-%d", n.id, group)), commit)
	if err != nil {
		return r, err
	}
	if len(rl.corrupt) > 0 {
		t.problem("node %d, partition %d: corrupt ranges %v", n.id, p, rl.corrupt)
	}
	r.Records, r.Start = rl.records, rl.start
	t.logf("partition %d: node %d holds %d committed messages from offset %d (+%d not known committed), final=%v",
		p, n.id, len(rl.records), rl.start, rl.tail, r.Final)
	return r, nil
}

// report runs the checker, prints the summary and returns the exit code.
func (t *test) report(h *checker.History, faulted, loaded time.Duration, converged bool) int {
	res := checker.Check(h)
	s := res.Stats
	fmt.Println()
	fmt.Println("==== Jepsen summary ====")
	fmt.Printf("seed              %d\n", t.cfg.seed)
	fmt.Printf("faults            %.1f min: %s\n", faulted.Minutes(), t.injectedList())
	fmt.Printf("replacements      %s\n", t.replacedList())
	fmt.Printf("publishes         %d in %.1f min: %d acked (%.0f/min), %d refused (NOT_LEADER), %d unknown outcome (%d of them stored)\n",
		s.Publishes, loaded.Minutes(), s.Acked, float64(s.Acked)/max(loaded.Minutes(), 1.0/60), s.Failed, s.Unknown+s.Pending,
		s.UncertainStored)
	fmt.Printf("reads             %d whole logs (%d final: each must hold every ack from its start on), %d records; %d ack checks\n",
		s.Reads, s.FinalReads, s.Records, s.AckChecks)
	for _, line := range t.retentionSummary(h, s) {
		fmt.Println(line)
	}
	fmt.Printf("deliveries        %d in %d consumer streams\n", s.Deliveries, s.Streams)
	fmt.Printf("group offsets     %s\n", groupSummary(h))
	fmt.Printf("converged         %v\n", converged)
	fmt.Printf("violations        %d\n", len(res.Violations))
	for _, k := range checker.Kinds() {
		if n := res.Count(k); n > 0 {
			fmt.Printf("  %-16s %d\n", k, n)
		}
	}
	shown := map[checker.Kind]int{}
	for _, v := range res.Violations {
		if shown[v.Kind]++; shown[v.Kind] <= 10 {
			fmt.Println("  ", v)
		}
	}
	problems := t.allProblems()
	fmt.Printf("broker problems   %d\n", len(problems))
	for _, p := range problems {
		fmt.Println("  ", p)
	}
	if !res.OK() || len(problems) > 0 {
		t.save(h, res)
		fmt.Println("RESULT: FAIL")
		return 1
	}
	fmt.Println("RESULT: PASS")
	return 0
}

func (t *test) allProblems() []string {
	t.mu.Lock()
	out := slices.Clone(t.problems)
	t.mu.Unlock()
	for _, n := range t.nodes {
		out = append(out, n.crashed()...)
	}
	// The same finding many times (a node crashing at each restart) is
	// one line with a count.
	counts := map[string]int{}
	var uniq []string
	for _, p := range out {
		if counts[p]++; counts[p] == 1 {
			uniq = append(uniq, p)
		}
	}
	for i, p := range uniq {
		if counts[p] > 1 {
			uniq[i] = fmt.Sprintf("%s (%d times)", p, counts[p])
		}
	}
	return uniq
}

// replacedList says which wiped nodes were replaced.
func (t *test) replacedList() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.replacements) == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (node %s)", len(t.replacements), strings.Join(t.replacements, ", node "))
}

func (t *test) injectedList() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := ""
	total := 0
	for _, k := range slices.Sorted(maps.Keys(t.injected)) {
		s += fmt.Sprintf("%s %d, ", k, t.injected[k])
		total += t.injected[k]
	}
	return fmt.Sprintf("%d faults (%s)", total, s[:max(0, len(s)-2)])
}

// save writes the violations and the history to the work directory.
func (t *test) save(h *checker.History, res checker.Result) {
	f, err := os.Create(filepath.Join(t.dir, "violations.txt"))
	if err == nil {
		for _, v := range res.Violations {
			_, _ = fmt.Fprintln(f, v)
		}
		_ = f.Close()
	}
	f, err = os.Create(filepath.Join(t.dir, "history.json"))
	if err == nil {
		_ = json.NewEncoder(f).Encode(h)
		_ = f.Close()
	}
}

func faultList(kinds []fault) string {
	s := ""
	for i, k := range kinds {
		if i > 0 {
			s += ","
		}
		s += k.name
	}
	return s
}
