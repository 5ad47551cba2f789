package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The consumer-group workload: a few groups consume the workload's topic
// through the cluster (client.Cluster.JoinGroup: each member joins at its
// group's coordinator, the leader of the group's partition of the
// __consumer_offsets topic, and follows it when it moves), committing
// every commitEvery; each member leaves and joins again through a
// shuffled node list every few seconds (one of them every second or
// two), so that a member may meet a new coordinator and commit there
// while the old one still believes it coordinates (the others are held
// at the old one meanwhile: a member's commits and its leave wait for
// it). A reader
// asks every node for every group's committed offsets (DescribeGroup)
// every describeEvery. The history gets every commit answered OK (the
// offsets the consumer reports stored, client.GroupConsumer.Committed)
// and every describe answered, with their times: the checker verifies
// that no read returns less than a commit acknowledged, or a read
// answered, before it began (checker.OffsetBackwards).
//
// There is one group per offsets partition, so that each node
// coordinates one of them (the offsets partitions' preferred leaders are
// spread over the nodes) and every fault aimed at a partition's leader
// deposes a coordinator too.

const (
	groupMembers  = 3 // the last one rejoins every 0.5-2 s, the others every 3-10 s
	commitEvery   = 200 * time.Millisecond
	describeEvery = 100 * time.Millisecond
	// offsetsPartitions is engine's: the partitions of __consumer_offsets,
	// a group's being FNV-1a-32 of its name modulo their number.
	offsetsPartitions = 3
)

// groupNames returns one group name per offsets partition.
func groupNames() []string {
	names := make([]string, offsetsPartitions)
	found := 0
	for i := 0; found < offsetsPartitions; i++ {
		name := fmt.Sprintf("jepsen-g%d", i)
		h := fnv.New32a()
		_, _ = h.Write([]byte(name))
		if k := h.Sum32() % offsetsPartitions; names[k] == "" {
			names[k] = name
			found++
		}
	}
	return names
}

// groupWorkload runs the groups' members and the reader.
type groupWorkload struct {
	topic string
	rec   *recorder
	quiet *slog.Logger

	mu    sync.Mutex
	addrs []string // the nodes' client addresses: those at the start, and any a refusal named since

	joins, delivered, commits, commitErrs atomic.Int64
	reads, readErrs, refused              atomic.Int64
}

// groupOffsets records observations of committed group offsets.
func (r *recorder) groupOffsets(obs []checker.GroupOffset) {
	if len(obs) == 0 {
		return
	}
	r.mu.Lock()
	r.h.GroupOffsets = append(r.h.GroupOffsets, obs...)
	r.mu.Unlock()
}

// groupWorkload starts the groups until wctx ends; the function it
// returns waits for them and logs what they did.
func (t *test) groupWorkload(wctx context.Context, rec *recorder) (wait func()) {
	w := &groupWorkload{topic: t.cfg.topic, rec: rec, quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, n := range t.live() {
		w.addrs = append(w.addrs, n.addr())
	}
	names := groupNames()
	var wg sync.WaitGroup
	for gi, name := range names {
		for m := range groupMembers {
			rng := rand.New(rand.NewPCG(t.cfg.seed, uint64(gi*groupMembers+m+1)))
			stay := [2]int{3000, 10000} // ms
			if m == groupMembers-1 {
				stay = [2]int{500, 2000}
			}
			wg.Go(func() { w.member(wctx, name, stay, rng) })
		}
	}
	wg.Go(func() { w.reader(wctx, names) })
	t.logf("groups: %s (one per offsets partition), %d members each in offset mode, committing every %v and "+
		"rejoining every 3-10 s (one of them every 0.5-2 s); every node asked for their committed offsets every %v",
		strings.Join(names, ", "), groupMembers, commitEvery, describeEvery)
	return func() {
		wg.Wait()
		t.logf("groups: %d joins, %d messages delivered, %d commits answered OK (%d failed), %d describes answered "+
			"(%d refused NOT_LEADER, %d other errors)", w.joins.Load(), w.delivered.Load(), w.commits.Load(),
			w.commitErrs.Load(), w.reads.Load(), w.refused.Load(), w.readErrs.Load())
	}
}

// nodes returns the known client addresses, shuffled by rng.
func (w *groupWorkload) nodes(rng *rand.Rand) []string {
	w.mu.Lock()
	out := slices.Clone(w.addrs)
	w.mu.Unlock()
	if rng != nil {
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	return out
}

// learn notes the node a refusal names, if it is new.
func (w *groupWorkload) learn(err error) {
	if _, addr, ok := wire.LeaderOf(err); ok && addr != "" {
		w.mu.Lock()
		if !slices.Contains(w.addrs, addr) {
			w.addrs = append(w.addrs, addr)
		}
		w.mu.Unlock()
	}
}

// member is one member of group: it joins, consumes and commits for
// stay[0] to stay[1] ms, leaves, and joins again, until ctx ends.
func (w *groupWorkload) member(ctx context.Context, group string, stay [2]int, rng *rand.Rand) {
	for ctx.Err() == nil {
		w.session(ctx, group, stay, rng)
		pace(ctx, time.Duration(50+rng.IntN(450))*time.Millisecond)
	}
}

// session is one membership: dial the cluster through a shuffled node
// list, join, commit every commitEvery for stay[0] to stay[1] ms, close.
func (w *groupWorkload) session(ctx context.Context, group string, stay [2]int, rng *rand.Rand) {
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := client.DialCluster(jctx, strings.Join(w.nodes(rng), ","), client.WithLogger(w.quiet),
		client.WithErrorHandler(func(error) {}), client.WithReconnect(20*time.Millisecond, 500*time.Millisecond),
		client.WithName("jepsen-group"))
	if err != nil {
		return
	}
	defer func() { _ = cl.Close() }()
	gc, err := cl.JoinGroup(jctx, client.GroupConfig{Group: group, Topic: w.topic, Start: client.Earliest,
		AutoCommitInterval: -1, Handler: func(*client.GroupMessage) error {
			w.delivered.Add(1)
			return nil
		}})
	if err != nil {
		w.learn(err)
		return
	}
	w.joins.Add(1)
	defer func() { _ = gc.Close() }()
	leave := time.NewTimer(time.Duration(stay[0]+rng.IntN(stay[1]-stay[0])) * time.Millisecond)
	defer leave.Stop()
	tick := time.NewTicker(commitEvery)
	defer tick.Stop()
	recorded := map[int]int64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-leave.C:
			return
		case <-tick.C:
		}
		w.commit(ctx, gc, group, recorded)
	}
}

// commit commits what gc handled and, when the commit is answered OK,
// records the offsets gc reports stored that changed since the last
// record (recorded).
func (w *groupWorkload) commit(ctx context.Context, gc *client.GroupConsumer, group string, recorded map[int]int64) {
	start := w.rec.now()
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	err := gc.Commit(cctx)
	cancel()
	if err != nil {
		w.commitErrs.Add(1)
		return
	}
	w.commits.Add(1)
	offs := gc.Committed()
	end := w.rec.now() // after the answer: every offset reported was stored by then
	var obs []checker.GroupOffset
	for p, off := range offs {
		if last, ok := recorded[p]; ok && last == off {
			continue
		}
		recorded[p] = off
		obs = append(obs, checker.GroupOffset{Group: group, Topic: w.topic, Partition: int32(p), Offset: off,
			Commit: true, Start: start, End: end})
	}
	w.rec.groupOffsets(obs)
}

// reader asks every known node for every group's committed offsets every
// describeEvery, one goroutine per node (a paused node holds up only its
// own), until ctx ends.
func (w *groupWorkload) reader(ctx context.Context, groups []string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	asking := map[string]bool{}
	for ctx.Err() == nil {
		for _, addr := range w.nodes(nil) {
			if !asking[addr] {
				asking[addr] = true
				wg.Go(func() { w.readNode(ctx, addr, groups) })
			}
		}
		pace(ctx, time.Second)
	}
}

// readNode describes every group at the node at addr, every
// describeEvery, recording what it answers.
func (w *groupWorkload) readNode(ctx context.Context, addr string, groups []string) {
	var c *client.Client
	for c == nil && ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		var err error
		c, err = client.Dial(dctx, addr, client.WithReconnect(20*time.Millisecond, 500*time.Millisecond),
			client.WithRetryOnFailedConnect(), client.WithLogger(w.quiet), client.WithErrorHandler(func(error) {}),
			client.WithName("jepsen-describe"))
		cancel()
		if err != nil {
			pace(ctx, time.Second)
		}
	}
	if c == nil {
		return
	}
	defer func() { _ = c.Close() }()
	for ctx.Err() == nil {
		for _, g := range groups {
			w.describe(ctx, c, g)
		}
		pace(ctx, describeEvery)
	}
}

// describe asks c for group's committed offsets and records the answer.
func (w *groupWorkload) describe(ctx context.Context, c *client.Client, group string) {
	start := w.rec.now()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	info, err := c.DescribeGroup(octx, group)
	cancel()
	end := w.rec.now()
	switch {
	case err == nil:
	case wire.CodeOf(err) == wire.CodeNotLeader:
		w.refused.Add(1)
		w.learn(err)
		return
	default:
		w.readErrs.Add(1)
		return
	}
	w.reads.Add(1)
	obs := make([]checker.GroupOffset, 0, len(info.Partitions))
	for _, p := range info.Partitions {
		obs = append(obs, checker.GroupOffset{Group: group, Topic: w.topic, Partition: p.Partition,
			Offset: p.Committed, Start: start, End: end})
	}
	w.rec.groupOffsets(obs)
}

// groupSummary is the summary's line about group offsets.
func groupSummary(h *checker.History) string {
	commits, reads := 0, 0
	groups := map[string]bool{}
	for _, o := range h.GroupOffsets {
		groups[o.Group] = true
		if o.Commit {
			commits++
		} else {
			reads++
		}
	}
	return fmt.Sprintf("%d observations of %d groups: %d committed offsets acknowledged, %d read back (DescribeGroup); "+
		"checked: no read below a commit acknowledged or a read answered before it began", len(h.GroupOffsets),
		len(groups), commits, reads)
}
