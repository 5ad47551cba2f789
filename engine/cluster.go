package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/cluster/transport"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// clusterNode is the broker's part in a cluster (Config.Peers): the
// Raft host that runs its groups, the transport to the other nodes, the
// controller group whose log is the cluster's metadata, and the applier
// that makes this node's topics and partitions match that metadata.
//
// Metadata flows one way: a change (a topic created) is proposed to the
// controller from any node; every node applies the committed command to
// its meta.State on the host's goroutine, publishes a copy (view), and
// wakes its applier, which reconciles the local topics with the copy
// (creating, deleting) off the host's goroutine; the proposer waits until
// its own node has reconciled past its command. Reconciling from the state
// rather than from each command makes a replay after a restart cheap and
// safe: a topic created and deleted before the restart is never opened.
type clusterNode struct {
	e    *Engine
	id   uint64
	host *cluster.Host
	tr   *transport.TCP
	ctrl *storage.DiskLog

	state *meta.State                // the host goroutine's (OnApply)
	view  atomic.Pointer[meta.State] // a copy for everyone else

	rmu     sync.Mutex
	results map[string]applied // by nonce: a proposed command's outcome, until its proposer takes it
	signal  chan struct{}      // wakes the applier
	quit    chan struct{}      // closed by close
	done    chan struct{}

	replicas sync.Map // group id → *replica
	// configs are the topics' configs as the applier last applied them
	// (the applier's).
	configs map[string]map[string]string

	wg        sync.WaitGroup // background loops other than the applier
	closeOnce sync.Once      // close runs once (a failed Start, then Shutdown)

	removed    atomic.Bool // this node was removed from the cluster (refuseRemoved)
	disks      *diskBook   // the peers' data directories (identity.go)
	readers    *readerBook // reader replicas for the groups here (readers.go)
	amu        sync.Mutex
	reconciled uint64 // the view version the applier last reconciled
	acond      *sync.Cond
	nonce      atomic.Uint64
}

type applied struct {
	index uint64
	err   error
}

// startCluster starts the cluster side: the transport, the host and the
// controller group. The controller replays its log in the background.
func (e *Engine) startCluster() error {
	cfg := &e.cfg
	c := &clusterNode{e: e, id: cfg.NodeID, state: meta.New(), results: map[string]applied{}, configs: map[string]map[string]string{},
		readers: newReaderBook(),
		signal:  make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.acond = sync.NewCond(&c.amu)
	c.view.Store(c.state.Clone())
	peers := map[uint64]string{}
	var others []uint64
	for id, addr := range cfg.Peers {
		if id != cfg.NodeID {
			peers[id] = addr
			others = append(others, id)
		}
	}
	slices.Sort(others)
	disk, err := loadIdentity(cfg.FS, cfg.DataDir, cfg.NodeID, cfg.ClusterID)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if c.disks, err = openDiskBook(cfg.FS, cfg.DataDir, e.log.With("component", "cluster")); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	// The transport listens, and may hand over a peer's frames, before
	// the host that takes them exists (it sends through the transport):
	// frames that come first are dropped, and Raft sends them again.
	var hostp atomic.Pointer[cluster.Host]
	tr, err := transport.NewTCP(transport.TCPConfig{
		NodeID: cfg.NodeID, ClusterID: cfg.ClusterID, ListenAddr: cfg.ClusterAddr, Peers: peers,
		Disk: disk, Admit: c.admit, OnRefused: c.refused,
		Handler: func(from uint64, envs []transport.Envelope) {
			if h := hostp.Load(); h != nil {
				h.Deliver(from, envs)
			}
		},
		Logger: e.log.With("component", "cluster-transport"),
	})
	if err != nil {
		return fmt.Errorf("engine: cluster listener: %w", err)
	}
	host := cluster.NewHost(cluster.HostConfig{NodeID: cfg.NodeID, Send: tr.Send, Peers: others,
		TickInterval: cfg.RaftTick, Logger: e.log.With("component", "raft"),
		RetentionTicks: retentionTicks(cfg), OnAsk: c.onAsk})
	c.tr, c.host = tr, host
	host.Start()
	hostp.Store(host)
	ctrl, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: cfg.FS, Dir: cfg.DataDir + "/cluster/controller",
		Files: e.topics.files, Cache: e.cache, Logger: e.log})
	if err != nil {
		host.Stop()
		_ = tr.Close()
		return fmt.Errorf("engine: controller log: %w", err)
	}
	c.ctrl = ctrl
	// A node that is not one of --peers joins a running cluster: its
	// controller replica starts empty and learns the configuration from
	// the log, once an operator added it (add-node) and the controller's
	// leader made it a learner (members.go).
	joining := cfg.Peers[cfg.NodeID] == ""
	var voters []uint64
	if !joining {
		voters = slices.Sorted(maps.Keys(cfg.Peers))
	}
	err = host.AddGroup(cluster.GroupConfig{ID: meta.ControllerGroup, Voters: voters, Join: joining, Log: ctrl,
		Meta: raftlog.SideMeta{L: ctrl}, Sync: true, ApplyFromStart: true, Forward: true, OnApply: c.apply, OnApplied: c.published})
	if err != nil {
		host.Stop()
		_ = tr.Close()
		_ = ctrl.Close()
		return fmt.Errorf("engine: controller group: %w", err)
	}
	e.cluster = c
	e.topics.repl = c
	go c.applier()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.leaderBalance()
	}()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.members()
	}()
	return nil
}

// register records this node's addresses in the metadata, retrying until
// the controller has a leader; it runs in the background from Start.
func (c *clusterNode) register(clientAddr, httpAddr string) {
	cmd := meta.AddNode{ID: c.id, ClientAddr: clientAddr, ClusterAddr: c.tr.Addr().String(), HTTPAddr: httpAddr}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.propose(ctx, cmd)
		cancel()
		if err == nil {
			c.e.log.Info("joined the cluster", "node", c.id, "client_addr", clientAddr)
			return
		}
		if errors.Is(err, meta.ErrNodeRemoved) {
			c.refuseRemoved()
			return
		}
		select {
		case <-c.quit:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// propose proposes a command to the controller and waits until this node
// applied and reconciled it, returning the command's own error.
func (c *clusterNode) propose(ctx context.Context, cmd meta.Command) error {
	nonce := strconv.FormatUint(c.id, 10) + "-" + strconv.FormatUint(c.nonce.Add(1), 10) + "-" +
		strconv.FormatInt(time.Now().UnixNano(), 36)
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	bb.Append(time.Now().UnixNano(), []byte(nonce), cmd.Encode(), nil)
	batch := bb.Finish()
	retry := time.NewTicker(2 * time.Second)
	defer retry.Stop()
	for {
		err := c.host.ProposeForward(meta.ControllerGroup, batch)
		var nl *cluster.NotLeaderError
		if err != nil && !errors.As(err, &nl) {
			return err
		}
		// Wait for the outcome, and propose again now and then: a
		// proposal forwarded to a leader that died is lost. A command
		// applied twice fails the second time, and only the first
		// outcome is taken.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if res, ok := c.take(nonce); ok {
				c.waitReconciled(ctx, res.index)
				return res.err
			}
			select {
			case <-ctx.Done():
				return wire.Errorf(wire.CodeLimitExceeded, "the cluster's controller did not apply the change in time "+
					"(no quorum?): "+ctx.Err().Error())
			case <-c.quit:
				return ErrShuttingDownCluster
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// ErrShuttingDownCluster is the answer to a metadata change while the node stops.
var ErrShuttingDownCluster = wire.Errorf(wire.CodeShuttingDown, "the node is stopping")

func (c *clusterNode) take(nonce string) (applied, bool) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	r, ok := c.results[nonce]
	if ok {
		delete(c.results, nonce)
	}
	return r, ok
}

// waitReconciled waits until the applier reconciled a view at least as new
// as index (bounded by ctx).
func (c *clusterNode) waitReconciled(ctx context.Context, index uint64) {
	stop := context.AfterFunc(ctx, func() {
		c.amu.Lock()
		c.acond.Broadcast()
		c.amu.Unlock()
	})
	defer stop()
	c.amu.Lock()
	defer c.amu.Unlock()
	for c.reconciled < index && ctx.Err() == nil && !c.closing() {
		c.acond.Wait()
	}
}

// closing reports whether close has begun (the applier stops, and
// reconciles nothing more).
func (c *clusterNode) closing() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// apply applies a committed controller entry, on the host's goroutine.
func (c *clusterNode) apply(e raftpb.Entry) {
	it := wire.Batch(e.Data).Records()
	var r wire.Record
	if !it.Next(&r) {
		return
	}
	res, err := c.state.Apply(e.Index, r.Value)
	if errors.Is(err, meta.ErrStaleIndex) {
		return
	}
	if err != nil {
		c.e.log.Debug("controller command refused", "index", e.Index, "op", res.Op, "err", err)
	}
	// Only this node's proposers wait for outcomes (their nonces start
	// with its id), and only the first application of a command is its
	// outcome: propose may have proposed it again, and the duplicate's
	// refusal (the topic exists) must not replace it.
	key := string(r.Key)
	if !strings.HasPrefix(key, strconv.FormatUint(c.id, 10)+"-") {
		return
	}
	c.rmu.Lock()
	if len(c.results) > 10000 { // proposers that gave up; keep the map bounded
		clear(c.results)
	}
	if _, dup := c.results[key]; !dup {
		c.results[key] = applied{index: e.Index, err: metaError(err)}
	}
	c.rmu.Unlock()
}

// published publishes a copy of the state once the entries of a pass were
// applied (a copy per entry would cost a pass of many leader reports
// dearly), and wakes the applier.
func (c *clusterNode) published() {
	c.view.Store(c.state.Clone())
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// metaError turns a refused command into the protocol's error.
func metaError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meta.ErrTopicExists):
		return wire.Errorf(wire.CodeTopicExists, err.Error())
	case errors.Is(err, meta.ErrUnknownTopic):
		return wire.Errorf(wire.CodeUnknownTopic, err.Error())
	case errors.Is(err, meta.ErrNodeRemoved):
		return removedError{wire.Errorf(wire.CodeInvalidArgument, err.Error()+
			" (node ids are never reused: add a new node with another --node-id and an empty data directory)")}
	default:
		return wire.Errorf(wire.CodeInvalidArgument, err.Error())
	}
}

// applier reconciles the local topics with the newest view each time the
// controller applies something.
func (c *clusterNode) applier() {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		case <-c.signal:
		}
		v := c.view.Load()
		c.reconcile(v)
		c.reconcileReplicas(v)
		c.syncPeers(v)
		c.amu.Lock()
		c.reconciled = v.Version()
		c.acond.Broadcast()
		c.amu.Unlock()
	}
}

// reconcile creates the topics of v this node lacks and deletes those it
// has that v does not (or that v holds in a newer incarnation).
func (c *clusterNode) reconcile(v *meta.State) {
	e := c.e
	for _, name := range v.Topics() {
		ti, _ := v.Topic(name)
		pi, _ := v.Partition(name, 0)
		if t := e.topics.get([]byte(name)); t != nil {
			if rep, ok := t.Parts[0].Replica.(*replica); ok && rep.group == pi.Group {
				c.alterLocal(name, ti.Config)
				continue
			}
			c.deleteLocal(name)
		}
		tc, err := e.topics.parseTopicConfig(uint32(ti.Partitions), configKVs(ti.Config))
		if err != nil {
			e.log.Error("cluster topic with a config this node refuses; not served here", "topic", name, "err", err)
			continue
		}
		tc.Replicas = ti.Replicas
		if _, _, err := e.topics.create(name, tc, false); err != nil {
			e.log.Error("cluster topic could not be opened here", "topic", name, "err", err)
			continue
		}
		c.configs[name] = ti.Config
	}
	for _, t := range e.topics.list() {
		if _, ok := v.Topic(t.Name); !ok {
			c.deleteLocal(t.Name)
		}
	}
}

// alterLocal applies a topic's config from the metadata when it changed
// since this node applied it: the keys set, and the keys removed back to
// the broker's defaults.
func (c *clusterNode) alterLocal(name string, cfg map[string]string) {
	old := c.configs[name]
	if maps.Equal(old, cfg) {
		return
	}
	defaults := map[string]string{}
	for _, kv := range c.e.topics.defaults().KVs() {
		defaults[kv.Key] = kv.Value
	}
	var kvs []wire.KV
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		if old[k] != cfg[k] && k != ConfigReplicas {
			kvs = append(kvs, wire.KV{Key: k, Value: cfg[k]})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(old)) {
		if _, still := cfg[k]; !still && defaults[k] != "" {
			kvs = append(kvs, wire.KV{Key: k, Value: defaults[k]})
		}
	}
	if _, err := c.e.topics.update(name, kvs); err != nil {
		c.e.log.Error("cluster topic config could not be applied here", "topic", name, "err", err)
	}
	c.configs[name] = cfg
}

func (c *clusterNode) deleteLocal(name string) {
	delete(c.configs, name)
	t := c.e.topics.get([]byte(name))
	if err := c.e.topics.remove(name); err != nil {
		c.e.log.Error("removing a deleted cluster topic", "topic", name, "err", err)
		return
	}
	if t != nil {
		// A group may still consume an earlier build of t, from before a
		// replica was added here that has not caught up yet (readers.go):
		// it moves to t first, so that TopicRemoved, which goes by the
		// topic itself (not its name, which a new topic may take), finds
		// it.
		c.e.groups.TopicReplaced(topic.Group{T: t})
		c.e.groups.TopicRemoved(topic.Group{T: t})
	}
}

func configKVs(m map[string]string) []wire.KV {
	kvs := make([]wire.KV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == ConfigReplicas {
			continue
		}
		kvs = append(kvs, wire.KV{Key: k, Value: m[k]})
	}
	return kvs
}

// createTopic proposes a topic to the controller and returns it once this
// node serves it.
func (c *clusterNode) createTopic(name string, tc TopicConfig, kvs []wire.KV, existOK bool) (*Topic, bool, error) {
	if t := c.e.topics.get([]byte(name)); t != nil {
		if existOK {
			return t, false, nil
		}
		return nil, false, wire.Errorf(wire.CodeTopicExists, "topic "+name+" exists")
	}
	cfg := map[string]string{}
	for _, kv := range kvs {
		cfg[kv.Key] = kv.Value
	}
	delete(cfg, ConfigReplicas)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c.awaitNodes(ctx, tc.Replicas)
	err := c.propose(ctx, meta.CreateTopic{Name: name, Partitions: tc.Partitions, Replicas: tc.Replicas, Config: cfg})
	if err != nil && (!existOK || !errors.Is(err, wire.ErrTopicExists)) {
		return nil, false, err
	}
	t := c.e.topics.get([]byte(name))
	if t == nil {
		return nil, false, wire.Errorf(wire.CodeInternal, "topic "+name+" was created in the cluster but not opened here; see the log")
	}
	return t, err == nil, nil
}

// nodeCount is how many nodes the cluster has, as far as this node can
// tell: those of --peers and itself (a node that joined a running cluster
// was given the members only), or the active nodes of the metadata if
// more.
func (c *clusterNode) nodeCount() int {
	n := len(c.e.cfg.Peers)
	if _, ok := c.e.cfg.Peers[c.id]; !ok {
		n++
	}
	return max(n, len(c.view.Load().ActiveNodes()))
}

// awaitNodes waits (within ctx, and at most 10 s) until enough nodes of
// the configured cluster registered for a topic of the replicas wanted
// (0: the default for the configured nodes): right after the nodes start,
// a create would otherwise fail for want of active nodes that are only
// seconds away.
func (c *clusterNode) awaitNodes(ctx context.Context, replicas int) {
	want := replicas
	if want <= 0 {
		want = meta.DefaultReplicas(c.nodeCount())
	}
	if want > c.nodeCount() {
		return // more than there are: let the controller refuse it
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(c.view.Load().ActiveNodes()) < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// deleteTopic proposes a topic's deletion and waits until this node has
// removed it.
func (c *clusterNode) deleteTopic(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return c.propose(ctx, meta.DeleteTopic{Name: name})
}

// open implements replication: partition i's log, in the data directory
// of its Raft group (group ids are never reused, so a topic deleted and
// created again never meets the old one's files), if this node holds a
// replica.
func (c *clusterNode) open(topic string, i int, tc TopicConfig, openLog func(dir string) (storage.Log, error)) (storage.Log, shard.Replicator, error) {
	pi, ok := c.view.Load().Partition(topic, i)
	if !ok {
		return nil, nil, fmt.Errorf("partition %d of %s is not in the cluster's metadata", i, topic)
	}
	rep := &replica{c: c, group: pi.Group, topic: topic, part: int32(i), voters: pi.Replicas,
		initial: pi.Initial, moved: pi.Moved, local: pi.Holds(c.id)}
	if !rep.local {
		return storage.NewOfflineLog(errors.New("no replica on this node")), rep, nil
	}
	l, err := openLog(c.e.cfg.DataDir + "/cluster/groups/" + strconv.FormatUint(pi.Group, 10))
	if err != nil {
		return nil, nil, err
	}
	rl, ok := l.(raftlog.Log)
	if !ok {
		_ = l.Close()
		return nil, nil, fmt.Errorf("partition %d of %s: its log cannot hold a Raft log", i, topic)
	}
	// Opened as a Raft log now, the log shows only what is committed to
	// whatever reads it next (the idempotent producers' rebuild).
	var ms raftlog.MetaStore = &raftlog.MemMeta{}
	if sf, ok := l.(raftlog.SideFiles); ok {
		ms = raftlog.SideMeta{L: sf}
	}
	if rep.store, err = raftlog.Open(rl, ms); err != nil {
		_ = l.Close()
		return nil, nil, fmt.Errorf("partition %d of %s: %w", i, topic, err)
	}
	return l, rep, nil
}

// start implements replication: it starts the partition's Raft group.
func (c *clusterNode) start(p *shard.Partition, tc TopicConfig) error {
	rep := p.Replica.(*replica)
	rep.p = p
	c.replicas.Store(rep.group, rep)
	if !rep.local {
		return nil
	}
	var prods []shard.ProducerBatch // the host's: idempotent batches of the pass, for OnCommit
	// A replica of the group's first configuration starts with it; any
	// other was added since, and learns the configuration from the log.
	initial := rep.initial
	if len(initial) == 0 {
		initial = rep.voters
	}
	// A reader (local, not one of rep.voters) always joins: a node of the
	// first configuration whose replica moved away and was dropped would
	// otherwise start over that configuration as a voter of it, and,
	// alone in it or with its leader out of reach, elect itself and lead
	// the partition from an empty log.
	// Likewise a replica of a partition whose set changed since: one that
	// moved away and back while its holder was down would elect itself.
	var voters []uint64
	if slices.Contains(initial, c.id) && slices.Contains(rep.voters, c.id) && !rep.moved {
		voters = initial
	}
	retention, floor := p.Retention, (func() int64)(nil)
	if tc.Storage == "memory" {
		// Its memory log keeps what Raft has not applied (raftlog.Open
		// stops it trimming itself): its bound is retention's.
		bound := c.e.cfg.MemoryTopicBytes
		retention = func() (time.Duration, int64) {
			age, bytes := p.Retention()
			if bytes <= 0 || bytes > bound {
				bytes = bound
			}
			return age, bytes
		}
	}
	if rep.topic == OffsetsTopic {
		// Each group's last record is its state: what goes is what the
		// last whole checkpoint made obsolete, all of it.
		rep.cpStart = -1
		retention = func() (time.Duration, int64) { return 0, 1 }
		floor = rep.floor.Load
	}
	err := c.host.AddGroup(cluster.GroupConfig{ID: rep.group, Voters: voters, Join: voters == nil, Store: rep.store,
		Sync: tc.Fsync.Mode == shard.SyncAlways, Retention: retention, Floor: floor,
		CatchUpBytes: c.catchUpBytes(),
		OnBatch: func(base int64, data []byte) {
			if rep.topic == OffsetsTopic {
				rep.checkpoints(base, data)
			}
			if b := wire.Batch(data); b.ProducerID() != wire.NoProducer {
				prods = append(prods, shard.ProducerBatch{ID: b.ProducerID(), Seq: b.ProducerSeq(),
					Count: int32(b.Count()), Base: base})
			}
		},
		OnCommit: func(end int64) {
			p.Committed(end, prods)
			prods = nil
		},
		OnLeader: func(leader, term uint64) {
			if leader == c.id {
				// Called before the Ready that holds this term's first
				// entry is appended: every entry before the log's end
				// offset now is an earlier term's (see replica.Propose).
				rep.caughtUp.Store(rep.store.EndOffset())
			}
			rep.term.Store(term)
			if was := rep.leader.Swap(leader); was == c.id && leader != c.id {
				p.Demoted() // its subscribers are told, not left waiting
				// (The review tests run nodes without an engine.)
				if c.e != nil && c.e.grepl != nil {
					c.e.grepl.wake() // a deposed coordinator stops at once
				}
			}
			if leader == c.id {
				go c.reportLeader(rep.group, term)
			}
		}})
	if err != nil {
		c.replicas.Delete(rep.group)
	}
	return err
}

// catchUpBytes is the partitions' catch-up window (Config.CatchUpBytes;
// the default for the review tests' nodes, which run without an engine).
func (c *clusterNode) catchUpBytes() int64 {
	if c.e == nil {
		return cluster.DefaultCatchUpBytes
	}
	return c.e.cfg.CatchUpBytes
}

// reportLeader records in the metadata that this node leads group from
// term on, for the nodes that hold no replica of it (their NOT_LEADER
// answers name it). Best effort: a lost report leaves an older hint.
func (c *clusterNode) reportLeader(group, term uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.propose(ctx, meta.ReportLeader{Group: group, Leader: c.id, Term: term})
}

// setSync implements replication.
func (c *clusterNode) setSync(p *shard.Partition, sp shard.SyncPolicy) {
	if rep, ok := p.Replica.(*replica); ok && rep.local {
		_ = c.host.SetSync(rep.group, sp.Mode == shard.SyncAlways)
	}
}

// alterTopic proposes a topic's config change (kvs, checked here first)
// and waits until this node applied it; the applier applies it on every
// node (reconcile).
func (c *clusterNode) alterTopic(name string, kvs []wire.KV) error {
	for _, kv := range kvs {
		if kv.Key == ActionRotateKey {
			return wire.Errorf(wire.CodeInvalidArgument, ActionRotateKey+" is not supported in a cluster yet: "+
				"each node holds its own keys")
		}
	}
	if err := c.e.topics.checkUpdate(name, kvs); err != nil {
		return err
	}
	cfg := map[string]string{}
	for _, kv := range kvs {
		if kv.Key != ConfigReplicas && kv.Key != ConfigStorage && kv.Key != ConfigEncryption {
			cfg[kv.Key] = kv.Value
		}
	}
	if len(cfg) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return c.propose(ctx, meta.AlterTopic{Name: name, Config: cfg})
}

// stop implements replication.
func (c *clusterNode) stop(p *shard.Partition) {
	rep, ok := p.Replica.(*replica)
	if !ok {
		return
	}
	c.replicas.Delete(rep.group)
	if rep.local {
		_ = c.host.RemoveGroup(rep.group)
	}
}

// close stops the cluster side: leadership goes to other nodes first
// (transferLeadership), then the host, the applier and the transport stop.
func (c *clusterNode) close() {
	c.closeOnce.Do(func() {
		c.transferLeadership(2 * time.Second)
		close(c.quit)
		c.amu.Lock()
		c.acond.Broadcast() // waitReconciled gives up
		c.amu.Unlock()
		<-c.done
		c.wg.Wait()
		c.host.Stop()
		_ = c.tr.Close()
		_ = c.ctrl.Close()
	})
}

// transferLeadership hands every group this node leads to another replica
// and waits (up to d) for them to take over, so a graceful shutdown costs
// the producers no election timeout.
func (c *clusterNode) transferLeadership(d time.Duration) {
	var led []*replica
	c.replicas.Range(func(_, v any) bool {
		rep := v.(*replica)
		if rep.local && rep.leader.Load() == c.id && c.handOver(rep.group) {
			led = append(led, rep)
		}
		return true
	})
	c.handOver(meta.ControllerGroup)
	deadline := time.Now().Add(d)
	for _, rep := range led {
		for rep.leader.Load() == c.id && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// handOver starts handing group's leadership, if this node leads it, to
// the replica best placed to take it (Host.TransferTarget: reachable, and
// holding the most of the log), and reports whether it did; with no
// other replica reachable it does not, and the group's followers elect a
// leader once this node is gone.
func (c *clusterNode) handOver(group uint64) bool {
	to, err := c.host.TransferTarget(group)
	return err == nil && to != 0 && c.host.TransferLeader(group, to) == nil
}

// replica is a replicated partition's shard.Replicator on this node.
type replica struct {
	c      *clusterNode
	group  uint64
	topic  string
	part   int32
	voters []uint64
	// initial is the group's first configuration, and moved says the
	// replica set changed since (meta.PartitionInfo).
	initial []uint64
	moved   bool
	local   bool          // this node holds a replica
	settled settledConf   // the members loop's (members.go)
	leader  atomic.Uint64 // the leader this node knows (0: none)
	term    atomic.Uint64 // the term of that leader, stored before it
	store   *raftlog.Storage
	p       *shard.Partition // set by start
	// caughtUp is the offset up to which the entries of earlier terms
	// reach in this node's log when it became leader, set before leader:
	// its shard knows their idempotent batches once its visible end is
	// there.
	caughtUp atomic.Int64
	// An offsets partition's checkpoints (groupsrepl.go): the base of the
	// batch that holds the last checkpoint's start, while its end is not
	// seen (-1 otherwise), and floor, the start of the last whole one:
	// retention may remove what is before it. The host's goroutine
	// updates both.
	cpStart int64
	floor   atomic.Int64
}

// Propose implements shard.Replicator.
func (r *replica) Propose(batch []byte, done func(int64, error)) {
	if err := r.Leads(); err != nil {
		done(0, err)
		return
	}
	// An idempotent batch was checked against the producers the shard
	// knows (it calls Propose on its own thread, right after). A new
	// leader's log may hold an earlier term's batches that are not
	// committed yet, and so unknown to the shard, and that commit with
	// this term's first entry: a retry of one of them, proposed now, would
	// be stored twice. Until the shard has seen them committed, it waits.
	if wire.Batch(batch).ProducerID() != wire.NoProducer && r.p != nil && r.p.EndOffset() < r.caughtUp.Load() {
		done(0, r.notLeader(0, "partition "+strconv.Itoa(int(r.part))+" of "+r.topic+
			": the new leader is committing its predecessors' batches; retry"))
		return
	}
	r.c.host.Propose(r.group, batch, func(res cluster.Result) {
		if res.Err != nil {
			done(0, r.wireError(res.Err))
			return
		}
		done(res.Base, nil)
	})
}

// Leads implements topic.Leader.
func (r *replica) Leads() error {
	if r.local && r.leader.Load() == r.c.id {
		return nil
	}
	return r.notLeader(r.preferredLeader(), "")
}

// preferredLeader is the leader to name: for a replica, the one its Raft
// group knows (0 during an election: the metadata's last report may name
// a leader that is gone, or this node); for a node that holds no replica,
// the one the metadata last heard of or prefers.
func (r *replica) preferredLeader() uint64 {
	if r.local {
		return r.leader.Load()
	}
	if pi, ok := r.c.view.Load().Partition(r.topic, int(r.part)); ok {
		if pi.Leader != 0 {
			return pi.Leader
		}
		if len(pi.Replicas) > 0 {
			return pi.Replicas[0]
		}
	}
	return 0
}

// notLeader is the NOT_LEADER refusal naming leader, which is named only
// when it is another node: a client told this node leads would come
// straight back, where "no leader" makes it ask again after a pause.
func (r *replica) notLeader(leader uint64, why string) error {
	if leader == r.c.id {
		leader = 0
	}
	addr := ""
	if n, ok := r.c.view.Load().Node(leader); ok {
		addr = n.ClientAddr
	}
	if why == "" {
		why = "partition " + strconv.Itoa(int(r.part)) + " of " + r.topic
	}
	return wire.NotLeader(leader, addr, why)
}

func (r *replica) wireError(err error) error {
	var nl *cluster.NotLeaderError
	switch {
	case errors.As(err, &nl):
		why := "partition " + strconv.Itoa(int(r.part)) + " of " + r.topic
		if nl.Unknown {
			why += "; the leader stepped down with this batch in flight: it may have been stored " +
				"(an idempotent producer's retry is stored once)"
		}
		return r.notLeader(nl.Leader, why)
	case errors.Is(err, cluster.ErrStopped):
		return wire.Errorf(wire.CodeShuttingDown, "the node is stopping")
	default:
		return wire.Errorf(wire.CodeStorageError, "partition "+strconv.Itoa(int(r.part))+" of "+r.topic+": "+err.Error())
	}
}

// ClusterAddr is where this node listens for the other nodes; nil on a
// single node.
func (e *Engine) ClusterAddr() net.Addr {
	if e.cluster == nil {
		return nil
	}
	return e.cluster.tr.Addr()
}

// SetPeer sets (or changes) the address of node id's cluster listener:
// for nodes started on port 0 (tests), or a node that moved.
func (e *Engine) SetPeer(id uint64, addr string) error {
	if e.cluster == nil {
		return errors.New("engine: not a cluster node")
	}
	return e.cluster.tr.SetPeer(id, addr)
}

// view reports this node's view of the cluster for the admin API.
func (c *clusterNode) report() httpapi.Cluster {
	v := c.view.Load()
	out := httpapi.Cluster{NodeID: c.id}
	if st, err := c.host.Status(meta.ControllerGroup); err == nil {
		out.Controller = raftGroup(st)
	}
	for _, n := range v.Nodes() {
		out.Nodes = append(out.Nodes, httpapi.ClusterNode{ID: n.ID, ClientAddr: n.ClientAddr, ClusterAddr: n.ClusterAddr,
			HTTPAddr: n.HTTPAddr, Status: string(n.Status), Reachable: n.ID == c.id || c.host.Reachable(n.ID)})
	}
	for _, name := range v.Topics() {
		ti, _ := v.Topic(name)
		for p := range ti.Partitions {
			pi, _ := v.Partition(name, p)
			cp := httpapi.ClusterPart{Topic: name, Partition: p, Replicas: pi.Replicas, Readers: pi.Readers, Leader: pi.Leader}
			if r, ok := c.replicas.Load(pi.Group); ok {
				rep := r.(*replica)
				if l := rep.leader.Load(); l != 0 {
					cp.Leader = l
				}
				if rep.local {
					if st, err := c.host.Status(pi.Group); err == nil {
						g := raftGroup(st)
						cp.Local = &g
					}
				}
			}
			out.Partitions = append(out.Partitions, cp)
		}
	}
	return out
}

// retentionTicks is how many Raft ticks make a RetentionInterval (at least
// one): the host applies the groups' retention that often. A zero RaftTick
// is the host's default tick, as the host takes it.
func retentionTicks(cfg *Config) int {
	tick := cfg.RaftTick
	if tick <= 0 {
		tick = cluster.DefaultTickInterval
	}
	return int(max(cfg.RetentionInterval/tick, 1))
}

func raftGroup(st cluster.GroupStatus) httpapi.RaftGroup {
	return httpapi.RaftGroup{Group: st.ID, Leader: st.Leader, Term: st.Term, State: st.State, Commit: st.Commit,
		LastIndex: st.LastIndex, Voters: st.Voters, Learners: st.Learners, Outgoing: st.Outgoing, Quiesced: st.Quiesced,
		Failed: st.Failed, FirstIndex: st.FirstIndex, Snapshots: st.Snapshots, SnapshotsSent: st.SnapshotsSent,
		Fetched: st.Fetched, ChunksServed: st.ChunksServed}
}

// Cluster implements httpapi.Broker.
func (b *httpBroker) Cluster() (httpapi.Cluster, bool) {
	if b.e().cluster == nil {
		return httpapi.Cluster{}, false
	}
	return b.e().cluster.report(), true
}

// TransferLeader implements httpapi.Broker.
func (b *httpBroker) TransferLeader(_ httpapi.Origin, topic string, partition int, to uint64) error {
	c := b.e().cluster
	if c == nil {
		return wire.Errorf(wire.CodeInvalidArgument, "this broker is a single node")
	}
	return c.transferLeader(topic, partition, to)
}

// Rebalance implements httpapi.Broker.
func (b *httpBroker) Rebalance(ctx context.Context, _ httpapi.Origin) error {
	c := b.e().cluster
	if c == nil {
		return wire.Errorf(wire.CodeInvalidArgument, "this broker is a single node")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.propose(ctx, meta.Rebalance{Replicas: true})
}

// AddNode implements httpapi.Broker.
func (b *httpBroker) AddNode(ctx context.Context, _ httpapi.Origin, id uint64, clusterAddr string) error {
	c := b.e().cluster
	if c == nil {
		return wire.Errorf(wire.CodeInvalidArgument, "this broker is a single node")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.addNode(ctx, id, clusterAddr)
}

// RemoveNode implements httpapi.Broker.
func (b *httpBroker) RemoveNode(ctx context.Context, _ httpapi.Origin, id uint64) error {
	c := b.e().cluster
	if c == nil {
		return wire.Errorf(wire.CodeInvalidArgument, "this broker is a single node")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.removeNode(ctx, id)
}

// transferLeader hands partition's leadership to node to, from this node,
// which must lead it, and makes to its preferred leader.
func (c *clusterNode) transferLeader(topic string, partition int, to uint64) error {
	t := c.e.topics.get([]byte(topic))
	if t == nil {
		return wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(topic))
	}
	p, err := t.Partition(int32(partition))
	if err != nil {
		return err
	}
	rep, ok := p.Replica.(*replica)
	if !ok {
		return wire.Errorf(wire.CodeInvalidArgument, "topic "+topic+" is not replicated")
	}
	if pi, ok := c.view.Load().Partition(topic, partition); !ok || !slices.Contains(pi.Replicas, to) {
		return wire.Errorf(wire.CodeInvalidArgument, "node "+strconv.FormatUint(to, 10)+" holds no replica of partition "+
			strconv.Itoa(partition)+" of "+topic)
	}
	if err := rep.Leads(); err != nil {
		return err
	}
	// The new leader becomes the preferred one, so that the leader balance
	// keeps it there rather than hand the partition back.
	pi, ok := c.view.Load().Partition(topic, partition)
	if ok && len(pi.Replicas) > 0 && pi.Replicas[0] != to {
		order := append([]uint64{to}, slices.DeleteFunc(slices.Clone(pi.Replicas), func(id uint64) bool { return id == to })...)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := c.propose(ctx, meta.MoveReplicas{Topic: topic, Partition: partition, Replicas: order}); err != nil {
			return err
		}
	}
	if to == c.id {
		return nil
	}
	if err := c.host.TransferLeader(rep.group, to); err != nil {
		return rep.wireError(err)
	}
	return nil
}

// leaderBalance runs in the background: every second, each group this node
// leads whose preferred leader (the first of its replicas in the metadata)
// is another node that is reachable hands its leadership over, at most
// once per group every few seconds. Placement spreads the preferred
// leaders evenly, and Rebalance spreads them again after nodes came and
// went, so this is what keeps leadership even (Kafka's preferred leader
// election).
func (c *clusterNode) leaderBalance() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	tried := map[uint64]time.Time{}
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		v := c.view.Load()
		c.replicas.Range(func(_, x any) bool {
			rep := x.(*replica)
			if !rep.local || rep.leader.Load() != c.id {
				return true
			}
			pi, ok := v.Partition(rep.topic, int(rep.part))
			if !ok || len(pi.Replicas) == 0 || pi.Replicas[0] == c.id || pi.Group != rep.group {
				return true
			}
			want := pi.Replicas[0]
			if n, ok := v.Node(want); !ok || n.Status != meta.NodeActive || !c.host.Reachable(want) {
				return true
			}
			if time.Since(tried[rep.group]) < 5*time.Second {
				return true
			}
			tried[rep.group] = time.Now()
			_ = c.host.TransferLeader(rep.group, want)
			return true
		})
	}
}
