// Package topic holds what both the network side (server) and the broker's
// composition root (engine) need to know of a topic: Topic, its Config and
// config keys, the lookup table the publish path reads with one atomic
// load, and the partition states every report agrees on. It opens no log
// and writes no file; the registry that creates, persists and deletes
// topics is engine's.
package topic

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Topic config keys accepted by CreateTopic. All but storage can also be
// changed at run time (AlterTopic, PATCH /api/v1/topics/NAME).
const (
	ConfigMaxSubscribers  = "max-subscribers"
	ConfigStorage         = "storage"           // disk | memory; fixed at creation
	ConfigFsync           = "fsync"             // always | interval=DURATION | never
	ConfigRetention       = "retention"         // a duration; 0 keeps forever
	ConfigRetentionBytes  = "retention-bytes"   // bytes per partition; 0 means no bound
	ConfigDeadLetterTopic = "dead-letter-topic" // message-mode groups' DLQ; empty: "<topic>.dlq"
	ConfigMaxDeliveries   = "max-deliveries"    // message-mode deliveries before the DLQ; default 5
	ConfigEncryption      = "encryption"        // on | off: encryption at rest (disk topics); fixed at creation
	ConfigReplicas        = "replicas"          // 1, 3 or 5 copies of each partition (a cluster); fixed at creation

	// ActionRotateKey, in an update (AlterTopic), gives an encrypted
	// topic a new data key for the batches written from then on. It is
	// an action, not a setting: no config lists it.
	ActionRotateKey = "rotate-key"
)

// Config is a topic's per-topic settings.
type Config struct {
	Partitions      int
	MaxSubscribers  int
	Storage         string // "disk" or "memory"
	Fsync           shard.SyncPolicy
	Retention       time.Duration
	RetentionBytes  int64
	DeadLetterTopic string // empty: "<topic>.dlq"
	MaxDeliveries   int    // 0: the broker's default
	Encryption      bool   // encrypted at rest; disk topics only
	Replicas        int    // copies of each partition on as many nodes; 1 on a single node
}

// KVs renders the config as the protocol's key/value list; replicas only
// for a cluster's topic (a single node's have no such setting to show).
func (tc Config) KVs() []wire.KV {
	kvs := tc.kvs()
	if tc.Replicas > 0 {
		kvs = append(kvs, wire.KV{Key: ConfigReplicas, Value: strconv.Itoa(tc.Replicas)})
	}
	return kvs
}

func (tc Config) kvs() []wire.KV {
	return []wire.KV{
		{Key: ConfigMaxSubscribers, Value: strconv.Itoa(tc.MaxSubscribers)},
		{Key: ConfigStorage, Value: tc.Storage},
		{Key: ConfigFsync, Value: tc.Fsync.String()},
		{Key: ConfigRetention, Value: tc.Retention.String()},
		{Key: ConfigRetentionBytes, Value: strconv.FormatInt(tc.RetentionBytes, 10)},
		{Key: ConfigDeadLetterTopic, Value: tc.DeadLetterTopic},
		{Key: ConfigMaxDeliveries, Value: strconv.Itoa(tc.MaxDeliveries)},
		{Key: ConfigEncryption, Value: OnOff(tc.Encryption)},
	}
}

// OnOff spells a switch as config values do.
func OnOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// Defaults are the "default.<key>" entries of a TopicInfo asked for with
// wire.FlagDefaults: for each setting of tc left at the value that stands
// for a default, the value it stands for. A dead-letter topic whose
// default name would not be valid (the topic's name is too long for the
// suffix) has no default, and no entry.
func (tc Config) Defaults(topic string) []wire.KV {
	var kvs []wire.KV
	if tc.DeadLetterTopic == "" {
		if dlq := topic + wire.DeadLetterSuffix; wire.ValidateQualifiedName(dlq) == nil {
			kvs = append(kvs, wire.KV{Key: wire.DefaultPrefix + ConfigDeadLetterTopic, Value: dlq})
		}
	}
	if tc.MaxDeliveries == 0 {
		kvs = append(kvs, wire.KV{Key: wire.DefaultPrefix + ConfigMaxDeliveries,
			Value: strconv.Itoa(wire.DefaultMaxDeliveries)})
	}
	return kvs
}

// ParseFsync parses an fsync policy: always, never, or interval=DURATION.
func ParseFsync(s string) (shard.SyncPolicy, error) {
	switch {
	case s == "always":
		return shard.SyncPolicy{Mode: shard.SyncAlways}, nil
	case s == "never":
		return shard.SyncPolicy{Mode: shard.SyncNever}, nil
	case strings.HasPrefix(s, "interval="):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "interval="))
		if err != nil || d < time.Millisecond {
			return shard.SyncPolicy{}, errors.New("interval must be a duration of at least 1ms, such as interval=100ms")
		}
		return shard.SyncPolicy{Mode: shard.SyncInterval, Interval: d}, nil
	}
	return shard.SyncPolicy{}, errors.New(`must be "always", "never" or "interval=DURATION"`)
}

// Topic is a topic's metadata and its partitions. Name, Parts and Online
// are immutable after creation; the config is replaced whole when it
// changes.
type Topic struct {
	Name  string
	Parts []*shard.Partition
	// Online are the partitions whose log opened (Parts itself when all
	// did): the broker's round robin and a subscription to every
	// partition cover these, so an offline partition does not fail every
	// n-th publish. A partition goes offline only at load, so this never
	// changes.
	Online []*shard.Partition
	// Subscriptions counts connection-level subscriptions, against
	// MaxSubscribers.
	Subscriptions atomic.Int32

	cfg atomic.Pointer[Config]
	rr  atomic.Uint32
}

// New is a topic of parts, whose logs are open (or offline), with config
// tc.
func New(name string, tc Config, parts []*shard.Partition) *Topic {
	t := &Topic{Name: name, Parts: parts, Online: parts}
	t.cfg.Store(&tc)
	if slices.ContainsFunc(parts, func(p *shard.Partition) bool { return OfflineReason(p) != "" }) {
		t.Online = slices.DeleteFunc(slices.Clone(parts), func(p *shard.Partition) bool { return OfflineReason(p) != "" })
	}
	return t
}

// Config is the topic's current config.
func (t *Topic) Config() Config { return *t.cfg.Load() }

// SetConfig replaces the topic's config; the caller applies it to the
// partitions.
func (t *Topic) SetConfig(tc *Config) { t.cfg.Store(tc) }

// PickPartition resolves PartitionAny to a partition that is not offline,
// round robin across batches, and checks an explicit one.
func (t *Topic) PickPartition(p int32) (*shard.Partition, error) {
	if p == wire.PartitionAny {
		if len(t.Online) == 0 {
			return nil, t.AllOffline()
		}
		n := int(t.rr.Add(1) - 1)
		first := t.Online[n%len(t.Online)]
		if _, ok := first.Replica.(Leader); !ok {
			return first, nil
		}
		// Replicated: any partition this node leads, so that a producer
		// that does not pick partitions can publish through any node.
		for i := range t.Online {
			if p := t.Online[(n+i)%len(t.Online)]; CheckLeader(p) == nil {
				return p, nil
			}
		}
		return first, nil // refused with NOT_LEADER
	}
	return t.Partition(p)
}

// AllOffline is the error of a request for any partition of a topic
// whose partitions are all offline.
func (t *Topic) AllOffline() error {
	return wire.Errorf(wire.CodePartitionOffline, "every partition of topic "+t.Name+" is offline: "+
		OfflineReason(t.Parts[0]))
}

// Partition checks and returns partition p.
func (t *Topic) Partition(p int32) (*shard.Partition, error) {
	if p < 0 || int(p) >= len(t.Parts) {
		return nil, wire.Errorf(wire.CodeUnknownPartition,
			"partition "+strconv.Itoa(int(p))+" of topic "+t.Name+" with "+strconv.Itoa(len(t.Parts))+" partitions")
	}
	return t.Parts[p], nil
}

// Group is a Topic as the group coordinator sees it (coord.Topic). It is
// comparable, so two of the same *Topic are equal, and a group tells its
// topic from a newer one of the same name. Both the sessions (joins) and
// the broker (deletes, dead letters) hand it over, so it lives here.
type Group struct{ T *Topic }

// Name implements coord.Topic.
func (g Group) Name() string { return g.T.Name }

// Partitions implements coord.Topic.
func (g Group) Partitions() []*shard.Partition { return g.T.Parts }

// DeadLetterTopic implements coord.Topic.
func (g Group) DeadLetterTopic() string { return g.T.Config().DeadLetterTopic }

// MaxDeliveries implements coord.Topic.
func (g Group) MaxDeliveries() int { return g.T.Config().MaxDeliveries }

// Table is the topics by name. Lookups, on every publish, read an
// immutable snapshot map with one atomic load; whoever changes the topics
// (engine's registry, under its own lock) stores a new map.
type Table struct {
	snap atomic.Pointer[map[string]*Topic]
}

// NewTable is an empty table.
func NewTable() *Table {
	t := &Table{}
	m := map[string]*Topic{}
	t.snap.Store(&m)
	return t
}

// Get is the topic named name, or nil.
func (tb *Table) Get(name []byte) *Topic { return (*tb.snap.Load())[string(name)] }

// GetName is Get by a string.
func (tb *Table) GetName(name string) *Topic { return (*tb.snap.Load())[name] }

// List is every topic, by name.
func (tb *Table) List() []*Topic {
	out := slices.Collect(maps.Values(*tb.snap.Load()))
	slices.SortFunc(out, func(a, b *Topic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Count is the number of topics.
func (tb *Table) Count() int { return len(*tb.snap.Load()) }

// Snapshot is the current map; it is never changed, only replaced.
func (tb *Table) Snapshot() map[string]*Topic { return *tb.snap.Load() }

// Replace makes m the table; m must not be changed afterwards.
func (tb *Table) Replace(m map[string]*Topic) { tb.snap.Store(&m) }

// A partition is in one of three states, read from its log's stats
// wherever it is reported (DescribeTopic, the admin API, metrics, the
// health report), so all of them agree:
//
//   - offline: its log could not be opened at start (storage.OfflineLog);
//     it refuses publishes and reads with PARTITION_OFFLINE until a
//     restart opens it;
//   - read-only: a failed fsync, or a failed write that could not be cut
//     off, made its log refuse writes until restart; it stays readable;
//   - online: everything else.

// PartitionState is the state of a partition whose log reported st, and
// why it is not online.
func PartitionState(st *storage.LogStats) (wire.PartitionState, string) {
	switch {
	case st.Offline != "":
		return wire.PartitionOffline, st.Offline
	case st.ReadOnly != "":
		return wire.PartitionReadOnly, st.ReadOnly
	}
	return wire.PartitionOnline, ""
}

// OfflineReason says why p is offline, or "" when it is not. It costs a
// type assertion, so paths that start a read can afford it.
func OfflineReason(p *shard.Partition) string {
	if l, ok := p.Log.(*storage.OfflineLog); ok {
		return l.Reason()
	}
	return ""
}

// Leader is what a replicated partition's Replicator also is: it says
// whether this node leads the partition, and if not, the NOT_LEADER error
// naming the leader.
type Leader interface {
	Leads() error
}

// CheckLeader refuses a request for a replicated partition that this node
// does not lead with NOT_LEADER; nil for a partition that is not
// replicated.
func CheckLeader(p *shard.Partition) error {
	if l, ok := p.Replica.(Leader); ok {
		return l.Leads()
	}
	return nil
}

// CheckOnline refuses a read of an offline partition with PARTITION_OFFLINE,
// and of a replicated partition this node does not lead with NOT_LEADER
// (reads go to the leader, which alone knows what is committed last).
func CheckOnline(p *shard.Partition) error {
	if err := CheckLeader(p); err != nil {
		return err
	}
	why := OfflineReason(p)
	if why == "" {
		return nil
	}
	return wire.Errorf(wire.CodePartitionOffline, "partition "+strconv.Itoa(int(p.ID))+" of topic "+p.Topic+
		" is offline until the broker restarts with its log readable: "+why)
}

// Describer is a log that has more to say in a topic's description than
// its settings: a Redis log names its server and what that server's
// persistence makes of an acknowledged message. These keys are shown, not
// settable.
type Describer interface {
	Describe() []wire.KV
}

// Describe is t's TopicInfo; the caller encodes it for its version. With
// defaults, the config also holds what the settings left to a default
// stand for (wire.FlagDefaults).
func Describe(t *Topic, defaults bool) wire.TopicInfo {
	tc := t.Config()
	kvs := tc.KVs()
	if defaults {
		kvs = append(kvs, tc.Defaults(t.Name)...)
	}
	if len(t.Parts) > 0 {
		if d, ok := t.Parts[0].Log.(Describer); ok {
			kvs = append(kvs, d.Describe()...)
		}
	}
	info := wire.TopicInfo{Name: t.Name, Config: kvs, Partitions: make([]wire.PartitionInfo, len(t.Parts))}
	for i, p := range t.Parts {
		st := p.Log.Stats()
		state, why := PartitionState(&st)
		info.Partitions[i] = wire.PartitionInfo{ID: uint32(i), StartOffset: st.Start, EndOffset: st.End,
			Subscribers: uint32(p.Subscribers()), Bytes: st.Bytes, Segments: uint32(st.Segments),
			Corrupt: uint32(len(st.Corrupt)), State: state, Reason: why}
	}
	return info
}
