package engine

import (
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Topic config keys accepted by CreateTopic.
const (
	ConfigMaxSubscribers = "max-subscribers"
)

// TopicConfig is a topic's per-topic settings.
type TopicConfig struct {
	Partitions     int
	MaxSubscribers int
}

// KVs renders the config as the protocol's key/value list.
func (tc TopicConfig) KVs() []wire.KV {
	return []wire.KV{{Key: ConfigMaxSubscribers, Value: strconv.Itoa(tc.MaxSubscribers)}}
}

// Topic is a topic's metadata and its partitions. The fields are immutable
// after creation except the atomic counters.
type Topic struct {
	Name   string
	Config TopicConfig
	Parts  []*shard.Partition

	subscriptions atomic.Int32 // connection-level subscriptions, against MaxSubscribers
	rr            atomic.Uint32
}

// pickPartition resolves PartitionAny to a partition, round robin across
// batches, and checks an explicit one.
func (t *Topic) pickPartition(p int32) (*shard.Partition, error) {
	if p == wire.PartitionAny {
		return t.Parts[int(t.rr.Add(1)-1)%len(t.Parts)], nil
	}
	if p < 0 || int(p) >= len(t.Parts) {
		return nil, wire.Errorf(wire.CodeUnknownPartition,
			"partition "+strconv.Itoa(int(p))+" of topic "+t.Name+" with "+strconv.Itoa(len(t.Parts))+" partitions")
	}
	return t.Parts[p], nil
}

// registry holds the topics. Lookups, on every publish, read an immutable
// snapshot map with one atomic load; changes copy the map under mu.
type registry struct {
	mu     sync.Mutex
	snap   atomic.Pointer[map[string]*Topic]
	shards []*shard.Shard
	cfg    *Config
}

func newRegistry(cfg *Config, shards []*shard.Shard) *registry {
	r := &registry{cfg: cfg, shards: shards}
	m := map[string]*Topic{}
	r.snap.Store(&m)
	return r
}

func (r *registry) get(name []byte) *Topic { return (*r.snap.Load())[string(name)] }

func (r *registry) list() []*Topic {
	m := *r.snap.Load()
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b *Topic) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func (r *registry) count() int { return len(*r.snap.Load()) }

// parseTopicConfig turns a create request into a TopicConfig, filling
// defaults and rejecting unknown keys and values out of range.
func (r *registry) parseTopicConfig(partitions uint32, kvs []wire.KV) (TopicConfig, error) {
	tc := TopicConfig{Partitions: int(partitions), MaxSubscribers: r.cfg.MaxSubscribers}
	if tc.Partitions == 0 {
		tc.Partitions = r.cfg.DefaultPartitions
	}
	if tc.Partitions > r.cfg.MaxPartitions {
		return tc, wire.Errorf(wire.CodeInvalidArgument,
			"partitions "+strconv.Itoa(tc.Partitions)+" above the broker's maximum "+strconv.Itoa(r.cfg.MaxPartitions))
	}
	for _, kv := range kvs {
		switch kv.Key {
		case ConfigMaxSubscribers:
			n, err := strconv.Atoi(kv.Value)
			if err != nil || n < 1 || n > r.cfg.MaxSubscribers {
				return tc, wire.Errorf(wire.CodeInvalidArgument,
					ConfigMaxSubscribers+" must be 1.."+strconv.Itoa(r.cfg.MaxSubscribers)+", got "+strconv.Quote(kv.Value))
			}
			tc.MaxSubscribers = n
		default:
			return tc, wire.Errorf(wire.CodeInvalidArgument, "unknown topic config key "+strconv.Quote(kv.Key))
		}
	}
	return tc, nil
}

// create adds a topic. With existOK it returns an existing topic of that name
// instead of failing (auto-creation racing with another creator).
func (r *registry) create(name string, tc TopicConfig, existOK bool) (*Topic, error) {
	if err := wire.ValidateTopicName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.snap.Load()
	if t, ok := old[name]; ok {
		if existOK {
			return t, nil
		}
		return nil, wire.Errorf(wire.CodeTopicExists, "topic "+name+" exists")
	}
	if len(old) >= r.cfg.MaxTopics {
		return nil, wire.Errorf(wire.CodeTooManyTopics, "the broker holds its maximum of "+strconv.Itoa(r.cfg.MaxTopics)+" topics")
	}
	t := &Topic{Name: name, Config: tc, Parts: make([]*shard.Partition, tc.Partitions)}
	base := topicHash(name)
	for i := range t.Parts {
		s := r.shards[(base+uint32(i))%uint32(len(r.shards))]
		t.Parts[i] = shard.NewPartition(name, int32(i), s)
	}
	m := maps.Clone(old)
	m[name] = t
	r.snap.Store(&m)
	return t, nil
}

// remove deletes a topic and retires its partitions on their shards.
func (r *registry) remove(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.snap.Load()
	t, ok := old[name]
	if !ok {
		return wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
	}
	m := maps.Clone(old)
	delete(m, name)
	r.snap.Store(&m)
	for _, p := range t.Parts {
		if err := p.Delete(); err != nil {
			return wire.Errorf(wire.CodeShuttingDown, err.Error())
		}
		p.Shard.Wake()
	}
	return nil
}

// topicHash spreads a topic's partitions over the shards starting at a
// point that depends on its name, so single-partition topics do not all
// land on shard 0.
func topicHash(name string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return h.Sum32()
}
