package engine

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Consumer groups in a cluster (docs/CLUSTER.md, "Consumer groups"). The
// committed offsets live in an internal replicated topic, OffsetsTopic,
// as Kafka's __consumer_offsets: a group's records go to the partition its
// name hashes to (OffsetsPartition), and the group's coordinator is that
// partition's leader. The node's one group coordinator (group/coord)
// coordinates the groups of the offsets partitions this node leads and
// refuses the others with NOT_LEADER naming their leader (Placement).
//
// When this node becomes a partition's leader, and its visible end has
// reached what its log held at the election (everything any earlier leader
// committed), it replays the partition, the last record of each group
// winning, and adopts those groups; only then does it accept their
// joins. When it stops leading the partition (or leads it again in a
// later term: another node may have coordinated the groups meanwhile), it
// evicts them: their members are told NOT_LEADER and disconnected, and
// join again at the new coordinator.

// OffsetsTopic is the internal topic that holds a cluster's committed
// offsets. Its name is outside what tenants can reach (it has no tenant
// prefix, and tenants' names are qualified).
const OffsetsTopic = "__consumer_offsets"

// offsetsPartitions is the offsets topic's partition count: the groups'
// coordination spreads over as many leaders. Fixed: a group's partition
// must not change.
const offsetsPartitions = 3

// Checkpoints keep the offsets topic small (docs/CLUSTER.md, "Consumer
// groups"): when an offsets partition this node coordinates holds more
// than checkpointMin records, and four times its groups, since its last
// checkpoint, the store rewrites every group of the partition
// (offsets.Store.Checkpoint) between two marker records, and every
// replica that commits the end marker lets retention remove what came
// before the start marker (replica.floor). A checkpoint is asked for at
// most every checkpointRetry.
const (
	checkpointMin   = 4096
	checkpointRetry = 5 * time.Second
	// checkpointBatchBytes splits a checkpoint's records into batches
	// well under a frame.
	checkpointBatchBytes = 256 << 10
)

// The keys of a checkpoint's marker records; a group name is never
// empty, nor starts with a NUL.
var (
	checkpointStartKey = []byte("\x00ratatoskr.checkpoint.start")
	checkpointEndKey   = []byte("\x00ratatoskr.checkpoint.end")
)

// offsetsPollInterval is how often the watcher looks at the offsets
// partitions' leadership; it bounds how long a new leader waits before it
// coordinates, next to the election itself.
const offsetsPollInterval = 20 * time.Millisecond

// OffsetsPartition is the offsets partition of the group named group:
// FNV-1a-32 of the name, modulo the partition count.
func OffsetsPartition(group string, partitions int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(group))
	return int(h.Sum32() % uint32(partitions))
}

// groupRepl is the cluster's side of consumer groups: the Placement the
// coordinator asks, the Replicator its store writes to, and the watcher
// that adopts and evicts groups as leaderships move.
type groupRepl struct {
	e     *Engine
	store *offsets.Store
	parts [offsetsPartitions]offsetsPart
	// cpMin is checkpointMin (tests lower it).
	cpMin atomic.Int64
	// want is set once a group asked for a coordinator: the offsets topic
	// is created then, so a cluster that never uses groups has none.
	want    atomic.Bool
	started atomic.Bool // start ran: stop waits for the watcher
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
	// poke wakes the watcher at once when a leadership of this node
	// changes, so that a deposed coordinator stops serving its groups
	// without waiting for the next tick.
	poke chan struct{}
}

// offsetsPart is what this node coordinates of one offsets partition:
// term is the Raft term in which it adopted the partition's groups, 0
// while it does not coordinate them.
type offsetsPart struct {
	term atomic.Uint64
	cpAt time.Time // when the watcher last asked for a checkpoint (its own)
}

func newGroupRepl(e *Engine) *groupRepl {
	r := &groupRepl{e: e, quit: make(chan struct{}), done: make(chan struct{}), poke: make(chan struct{}, 1)}
	r.cpMin.Store(checkpointMin)
	return r
}

// wake makes the watcher check the offsets partitions now.
func (r *groupRepl) wake() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// newClusterCoordinator is newCoordinator for a cluster node: its store
// writes to the offsets topic.
func newClusterCoordinator(e *Engine) *coord.Coordinator {
	r := newGroupRepl(e)
	e.grepl = r
	r.store = offsets.NewReplicated(r, r.Coordinates, e.log)
	return coord.New(coord.Config{Broker: groupBroker{e}, Store: r.store,
		Log: e.log, Retention: e.cfg.GroupRetention, Placement: r})
}

// replicaOf is offsets partition k's partition and replica on this node,
// or nil while the topic is not open here.
func (r *groupRepl) replicaOf(k int) (*shard.Partition, *replica) {
	t := r.e.topics.get([]byte(OffsetsTopic))
	if t == nil || k >= len(t.Parts) {
		return nil, nil
	}
	p := t.Parts[k]
	rep, ok := p.Replica.(*replica)
	if !ok {
		return nil, nil
	}
	return p, rep
}

// coordWhy names the group and its offsets partition k in a refusal.
func coordWhy(group string, k int) string {
	return "coordinator of group " + strconv.Quote(wire.Unqualified(group)) + ": partition " + strconv.Itoa(k) +
		" of " + OffsetsTopic
}

// Coordinates implements coord.Placement: nil when this node adopted the
// group's offsets partition in the term it leads it in now.
func (r *groupRepl) Coordinates(group string) error {
	k := OffsetsPartition(group, offsetsPartitions)
	why := coordWhy(group, k)
	_, rep := r.replicaOf(k)
	if rep == nil {
		r.want.Store(true) // the first group of the cluster: the watcher creates the topic
		return wire.NotLeader(0, "", why+" (the offsets topic is being created)")
	}
	if term := r.parts[k].term.Load(); term != 0 && rep.Leads() == nil && rep.term.Load() == term {
		return nil
	}
	leader := rep.preferredLeader()
	if leader == r.e.cluster.id {
		why += "; it is taking the group over, retry" // elected, still replaying the partition
	}
	return rep.notLeader(leader, why)
}

// Confirm implements coord.Placement: a Raft ReadIndex of the group's
// offsets partition confirms, with a quorum, that this node still leads
// it in the term it adopted the partition's groups in (cluster.Host.ReadIndex).
// Until then a node cut off from the others, or paused, may believe it
// leads while a new coordinator has taken commits: what it would answer
// is stale. A node that cannot confirm refuses with NOT_LEADER, naming the
// leader when it knows it ("no leader" when it heard from no quorum in
// two election timeouts).
func (r *groupRepl) Confirm(group string, done func(error)) {
	if err := r.Coordinates(group); err != nil {
		done(err)
		return
	}
	k := OffsetsPartition(group, offsetsPartitions)
	why := coordWhy(group, k)
	_, rep := r.replicaOf(k)
	adopted := r.parts[k].term.Load()
	r.e.cluster.host.ReadIndex(rep.group, func(rs cluster.ReadState, err error) {
		var nl *cluster.NotLeaderError
		switch {
		case err == nil && rs.Term == adopted:
			done(nil)
		case err == nil:
			// Leads it in a later term: not adopted in that one yet.
			done(rep.notLeader(0, why+"; it is taking the group over, retry"))
		case errors.As(err, &nl):
			done(rep.notLeader(nl.Leader, why))
		case errors.Is(err, cluster.ErrReadTimeout):
			done(rep.notLeader(0, why+"; no quorum confirmed its leadership, retry"))
		default:
			done(rep.wireError(err))
		}
	})
}

// Write implements offsets.Replicator: the records of each offsets
// partition go in one batch to it, and each answer is its batch's. A
// checkpoint's records go between its two markers, in as many batches
// as their size takes, one after the other; after a failed batch the rest
// are not sent (their records fail too), so no end marker follows an
// incomplete checkpoint.
func (r *groupRepl) Write(recs []offsets.Record) []error {
	errs := make([]error, len(recs))
	byPart := map[int][]int{}
	for i, rec := range recs {
		k := OffsetsPartition(rec.Group, offsetsPartitions)
		byPart[k] = append(byPart[k], i)
	}
	for k, idx := range byPart {
		cp := slices.ContainsFunc(idx, func(i int) bool { return recs[i].Checkpoint })
		// The records were made while this node coordinated k in the term
		// it took its groups over in; each batch goes only while that is
		// still so. A node that lost the partition and won it back in a
		// later term must not write what it made before: another
		// coordinator may have written newer states between.
		term := r.parts[k].term.Load()
		var err error
		for first := true; len(idx) > 0 && err == nil; first = false {
			if err = r.stillCoordinates(k, term); err != nil {
				break
			}
			// Batches stay well under a frame, however many groups changed.
			n := 0
			for size := 0; n < len(idx) && (n == 0 || size+len(recs[idx[n]].Data) <= checkpointBatchBytes); n++ {
				size += len(recs[idx[n]].Data) + len(recs[idx[n]].Group)
			}
			err = r.writeBatch(k, recs, idx[:n], cp && first, cp && n == len(idx))
			for _, i := range idx[:n] {
				errs[i] = err
			}
			idx = idx[n:]
		}
		for _, i := range idx {
			errs[i] = err // not sent: an earlier batch failed, or k moved
		}
	}
	return errs
}

// stillCoordinates is nil while this node coordinates offsets partition
// k in term (the one it took the partition's groups over in), else the
// NOT_LEADER to answer with.
func (r *groupRepl) stillCoordinates(k int, term uint64) error {
	_, rep := r.replicaOf(k)
	if term != 0 && rep != nil && r.parts[k].term.Load() == term && rep.Leads() == nil && rep.term.Load() == term {
		return nil
	}
	leader := uint64(0)
	if rep != nil {
		leader = rep.preferredLeader()
	}
	why := "coordinator of partition " + strconv.Itoa(k) + " of " + OffsetsTopic + ": no longer this node"
	if rep == nil {
		return wire.NotLeader(0, "", why)
	}
	return rep.notLeader(leader, why)
}

// writeBatch publishes recs[idx] as one batch to offsets partition k,
// after a checkpoint's start marker (start) and before its end marker
// (end).
func (r *groupRepl) writeBatch(k int, recs []offsets.Record, idx []int, start, end bool) error {
	var bb wire.BatchBuilder
	buf, _ := wire.StartFrame(nil, wire.TypePublish, 0, 0)
	buf = wire.AppendBatchPrefix(buf, OffsetsTopic, int32(k))
	batchOff := len(buf)
	bb.Start(buf, -1, -1)
	now := time.Now().UnixNano()
	if start {
		bb.Append(now, checkpointStartKey, nil, nil)
	}
	for _, i := range idx {
		bb.Append(now, []byte(recs[i].Group), recs[i].Data, nil)
	}
	if end {
		bb.Append(now, checkpointEndKey, nil, nil)
	}
	frame := bb.Finish()
	wire.FinishFrame(frame, 0)
	return r.e.publishInternalTo(OffsetsTopic, int32(k), frame, batchOff)
}

// checkpoints follows an offsets partition's checkpoints in its
// committed batches (GroupConfig.OnBatch, on the host's goroutine): a
// start marker notes its batch's base; the end marker after it makes that
// the floor retention may remove up to.
func (rep *replica) checkpoints(base int64, data []byte) {
	b := wire.Batch(data)
	if b.Codec() != wire.CodecNone {
		return // the broker writes its records plain
	}
	it := b.Records()
	var rec wire.Record
	for it.Next(&rec) {
		switch {
		case bytes.Equal(rec.Key, checkpointStartKey):
			rep.cpStart = base
		case bytes.Equal(rec.Key, checkpointEndKey) && rep.cpStart >= 0:
			rep.floor.Store(rep.cpStart)
			rep.cpStart = -1
		}
	}
}

// maybeCheckpoint asks the store for a checkpoint of offsets partition k,
// which this node coordinates, when enough was written since the last.
func (r *groupRepl) maybeCheckpoint(k int, p *shard.Partition, rep *replica) {
	if r.store == nil || time.Since(r.parts[k].cpAt) < checkpointRetry {
		return
	}
	since := p.EndOffset() - rep.floor.Load()
	if since < r.cpMin.Load() {
		return
	}
	in := func(g string) bool { return OffsetsPartition(g, offsetsPartitions) == k }
	if since < 4*int64(r.store.Count(in)) {
		return
	}
	r.parts[k].cpAt = time.Now()
	n := r.store.Checkpoint(in)
	r.e.log.Debug("checkpoint of the consumer offsets", "offsets_partition", k, "groups", n, "records_since", since)
}

// start runs the watcher; the offsets topic is created by the first node
// asked for a group's coordinator while it is missing.
func (r *groupRepl) start() {
	r.started.Store(true)
	go r.watch()
}

// stop stops the watcher, if it was started.
func (r *groupRepl) stop() {
	r.once.Do(func() { close(r.quit) })
	if r.started.Load() {
		<-r.done
	}
}

// watch creates the offsets topic if need be, then adopts and evicts the
// groups of the offsets partitions as this node's leaderships change.
func (r *groupRepl) watch() {
	defer close(r.done)
	t := time.NewTicker(offsetsPollInterval)
	defer t.Stop()
	created := false
	var lastTry time.Time
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
		case <-r.poke:
		}
		if !created && r.want.Load() && time.Since(lastTry) > time.Second {
			lastTry = time.Now()
			created = r.ensureTopic()
		}
		for k := range offsetsPartitions {
			r.check(k)
		}
	}
}

// ensureTopic creates the offsets topic unless it exists, and reports
// whether it does now.
func (r *groupRepl) ensureTopic() bool {
	if r.e.topics.get([]byte(OffsetsTopic)) != nil {
		return true
	}
	// As many as the cluster has now, up to 3: a replacement node was
	// given the other members only as its peers.
	replicas := strconv.Itoa(meta.DefaultReplicas(r.e.cluster.nodeCount()))
	// No retention: a group's last record is its state, however old
	// (GroupRetention expires idle groups).
	_, err := r.e.createTopicBy(byBroker, OffsetsTopic, offsetsPartitions,
		[]wire.KV{{Key: ConfigReplicas, Value: replicas}, {Key: ConfigRetention, Value: "0"},
			{Key: ConfigRetentionBytes, Value: "0"}}, true)
	if err != nil && !errors.Is(err, wire.ErrTopicExists) {
		r.e.log.Debug("creating the consumer offsets topic; retrying", "err", err)
		return false
	}
	return true
}

// check adopts offsets partition k's groups once this node leads it and
// has caught up, and evicts them once it no longer leads it in the term
// it adopted them in.
func (r *groupRepl) check(k int) {
	p, rep := r.replicaOf(k)
	adopted := r.parts[k].term.Load()
	leads := rep != nil && rep.Leads() == nil
	term := uint64(0)
	if rep != nil {
		term = rep.term.Load()
	}
	if adopted != 0 && leads && term == adopted {
		r.maybeCheckpoint(k, p, rep)
		return
	}
	if adopted != 0 && (!leads || term != adopted) {
		r.parts[k].term.Store(0)
		r.e.groups.Evict(func(g string) bool { return OffsetsPartition(g, offsetsPartitions) == k })
		r.e.log.Info("consumer groups handed over", "offsets_partition", k)
		adopted = 0
	}
	if adopted != 0 || !leads || term == 0 || p.EndOffset() < rep.caughtUp.Load() {
		return
	}
	groups, err := replayOffsets(p, r.e.log)
	if err != nil {
		r.e.log.Error("replaying the consumer offsets; not coordinating its groups", "offsets_partition", k, "err", err)
		return
	}
	r.e.groups.Adopt(groups)
	// Adopted in this term only if it still leads in it; else the next
	// check evicts what Adopt took in.
	r.parts[k].term.Store(term)
	r.e.log.Info("coordinating consumer groups", "offsets_partition", k, "groups", len(groups), "term", term)
}

// replayOffsets reads offsets partition p up to its visible end (what is
// committed) and returns each group's last state; removed groups are
// absent.
func replayOffsets(p *shard.Partition, log *slog.Logger) (map[string]*offsets.Group, error) {
	groups := map[string]*offsets.Group{}
	bad := 0
	defer func() {
		if bad > 0 {
			log.Warn("skipped records of the consumer offsets topic that are not group records",
				"offsets_partition", p.ID, "records", bad)
		}
	}()
	start, end := p.Log.Bounds()
	var dec wire.Decompressor
	for off := start; off < end; {
		from := off
		var ierr error
		err := p.Log.Read(off, 1<<20, func(b wire.Batch) bool {
			it, err := dec.Records(b, wire.MaxBatchBytes)
			if err != nil {
				ierr = err
				return false
			}
			var rec wire.Record
			for it.Next(&rec) {
				off = rec.Offset + 1
				if bytes.Equal(rec.Key, checkpointStartKey) || bytes.Equal(rec.Key, checkpointEndKey) {
					continue
				}
				name, g, err := offsets.DecodeRecord(rec.Value)
				if err != nil {
					bad++ // not the broker's (a client wrote to the topic): it holds no group's state
					continue
				}
				if g == nil {
					delete(groups, name)
				} else {
					groups[name] = g
				}
			}
			if it.Err() != nil {
				ierr = it.Err()
				return false
			}
			off = max(off, b.BaseOffset()+int64(b.Count()))
			return off < end
		})
		if err == nil {
			err = ierr
		}
		if err == nil && off == from {
			err = fmt.Errorf("no batch at offset %d below the visible end %d", off, end)
		}
		if err != nil {
			return nil, err
		}
	}
	return groups, nil
}

// askGroups is the node request (cluster.Host.Ask) for the groups a node
// coordinates.
const askGroups = "groups"

// onAsk answers the other nodes' requests (cluster.HostConfig.OnAsk), off
// the host's goroutine.
func (c *clusterNode) onAsk(_ uint64, kind string, _ []byte, answer func([]byte)) {
	if kind != askGroups || c.e == nil || c.e.groups == nil {
		answer(nil)
		return
	}
	go func() { answer(wire.AppendGroupList(nil, c.e.groups.List())) }()
}

// ListOthers implements coord.Lister: it asks every other member of the
// cluster this node can reach for the groups it coordinates (a node
// request each: one round trip, or two election timeouts for one that
// does not answer), and calls done with what they answered.
func (r *groupRepl) ListOthers(done func([]wire.GroupSummary)) {
	c := r.e.cluster
	go func() {
		var ids []uint64
		for _, id := range c.view.Load().Members() {
			if id != c.id && c.host.Reachable(id) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			done(nil)
			return
		}
		var mu sync.Mutex
		var all []wire.GroupSummary
		left := len(ids)
		for _, id := range ids {
			c.host.Ask(id, askGroups, nil, func(body []byte, err error) {
				var gs []wire.GroupSummary
				if err == nil && len(body) > 0 {
					gs, err = wire.DecodeGroupList(body)
				}
				if err != nil {
					r.e.log.Warn("the groups of a node are not listed", "node", id, "err", err)
				}
				mu.Lock()
				all = append(all, gs...)
				left--
				last := left == 0
				mu.Unlock()
				if last {
					done(all)
				}
			})
		}
	}()
}
