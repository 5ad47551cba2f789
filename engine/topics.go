package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/redislog"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Topic, TopicConfig, the config keys and ParseFsync are package topic's
// (both the network side and the registry need them); these aliases keep
// engine's API.
type (
	// Topic is a topic's metadata and its partitions (topic.Topic).
	Topic = topic.Topic
	// TopicConfig is a topic's per-topic settings (topic.Config).
	TopicConfig = topic.Config
)

// Topic config keys accepted by CreateTopic (topic's).
const (
	ConfigMaxSubscribers  = topic.ConfigMaxSubscribers
	ConfigStorage         = topic.ConfigStorage
	ConfigFsync           = topic.ConfigFsync
	ConfigRetention       = topic.ConfigRetention
	ConfigRetentionBytes  = topic.ConfigRetentionBytes
	ConfigDeadLetterTopic = topic.ConfigDeadLetterTopic
	ConfigMaxDeliveries   = topic.ConfigMaxDeliveries
	ConfigEncryption      = topic.ConfigEncryption
	ConfigReplicas        = topic.ConfigReplicas
	ActionRotateKey       = topic.ActionRotateKey
)

// ParseFsync parses an fsync policy: always, never, or interval=DURATION.
func ParseFsync(s string) (shard.SyncPolicy, error) { return topic.ParseFsync(s) }

// registry holds the topics. Lookups, on every publish, read an immutable
// snapshot map with one atomic load (topic.Table, which the network side
// reads too); changes copy the map under mu and are written to the
// metadata file before they take effect.
type registry struct {
	mu     sync.Mutex
	snap   *topic.Table
	shards []*shard.Shard
	cfg    *Config
	cache  *storage.BlockCache
	files  *storage.FileCache    // every partition's segment files, within MaxOpenFiles
	trash  *storage.Reclaimer    // set by Engine.Start before load
	keys   map[string]*topicKeys // encrypted topics' data keys (keys.go), guarded by mu
	// quotas returns a tenant's quotas (security.go); nil: none.
	quotas func(tenant string) auth.Quotas
	// repl places the partitions of a cluster's topics (cluster.go); nil
	// on a single node. With it, the controller's metadata is the record
	// of the topics, not the metadata file.
	repl replication
	// redis keeps storage=redis topics' logs (redis.go); nil without one.
	redis *redislog.Store
}

// replication is how a cluster node builds its partitions (cluster.go).
type replication interface {
	// open returns the log of partition i of topic, opened with openLog
	// in a directory of its choice when this node holds one of its
	// replicas, and its Replicator.
	open(topic string, i int, tc TopicConfig, openLog func(dir string) (storage.Log, error)) (storage.Log, shard.Replicator, error)
	// start starts the Raft group of a partition open returned, once the
	// partition exists.
	start(p *shard.Partition, tc TopicConfig) error
	// stop stops it, before its log is closed or dropped.
	stop(p *shard.Partition)
	// setSync applies a new fsync policy to its group.
	setSync(p *shard.Partition, sp shard.SyncPolicy)
}

func newRegistry(cfg *Config, shards []*shard.Shard, cache *storage.BlockCache) *registry {
	return &registry{snap: topic.NewTable(), cfg: cfg, shards: shards, cache: cache,
		files: storage.NewFileCache(cfg.MaxOpenFiles), keys: map[string]*topicKeys{}}
}

func (r *registry) get(name []byte) *Topic { return r.snap.Get(name) }
func (r *registry) list() []*Topic         { return r.snap.List() }
func (r *registry) count() int             { return r.snap.Count() }

// defaults is the config of a topic created without any settings.
func (r *registry) defaults() TopicConfig {
	fsync, _ := ParseFsync(r.cfg.DefaultFsync)
	return TopicConfig{Partitions: r.cfg.DefaultPartitions, MaxSubscribers: r.cfg.MaxSubscribers,
		Storage: r.cfg.DefaultStorage, Fsync: fsync, Retention: r.cfg.DefaultRetention,
		RetentionBytes: r.cfg.DefaultRetentionBytes, Encryption: r.cfg.EncryptAtRest}
}

// parseTopicConfig turns a create request into a TopicConfig, filling
// defaults and rejecting unknown keys and values out of range.
func (r *registry) parseTopicConfig(partitions uint32, kvs []wire.KV) (TopicConfig, error) {
	tc := r.defaults()
	if partitions > 0 {
		tc.Partitions = int(partitions)
	}
	if tc.Partitions > r.cfg.MaxPartitions {
		return tc, invalid("partitions " + strconv.Itoa(tc.Partitions) + " above the broker's maximum " + strconv.Itoa(r.cfg.MaxPartitions))
	}
	encryption := ""
	for _, kv := range kvs {
		if err := r.applyKV(&tc, kv); err != nil {
			return tc, err
		}
		if kv.Key == ConfigEncryption {
			encryption = kv.Value
		}
	}
	if tc.Storage == "memory" {
		tc.Fsync = shard.SyncPolicy{Mode: shard.SyncNever}
		// Nothing of a memory topic is at rest: the broker-wide default
		// does not apply, and asking for it is a mistake worth saying.
		if encryption == "on" {
			return tc, invalid(ConfigEncryption + "=on applies to disk topics: a memory topic keeps nothing at rest")
		}
		tc.Encryption = false
	}
	if tc.Storage == redisStorage {
		// Redis acknowledges a write as durable as its persistence makes
		// it (docs/REDIS.md); the broker acks once Redis answered.
		tc.Fsync = shard.SyncPolicy{Mode: shard.SyncAlways}
		if encryption == "on" {
			return tc, invalid(ConfigEncryption + "=on applies to disk topics; a Redis topic's data is Redis's to protect")
		}
		tc.Encryption = false
	}
	if tc.Encryption && r.cfg.MasterKey == nil {
		return tc, invalid(ConfigEncryption + "=on needs the broker to have a master key " +
			"(serve --master-key-file or RATATOSKR_MASTER_KEY)")
	}
	return tc, nil
}

func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }

func (r *registry) applyKV(tc *TopicConfig, kv wire.KV) error {
	bad := func(why string) error { return invalid(kv.Key + " " + why + ", got " + strconv.Quote(kv.Value)) }
	switch kv.Key {
	case ConfigMaxSubscribers:
		n, err := strconv.Atoi(kv.Value)
		if err != nil || n < 0 || n > r.cfg.MaxSubscribers {
			return bad("must be 1.." + strconv.Itoa(r.cfg.MaxSubscribers) + ", or 0 for the broker's limit")
		}
		if n == 0 { // the same in a create and an update: the broker's limit
			n = r.cfg.MaxSubscribers
		}
		tc.MaxSubscribers = n
	case ConfigStorage:
		if kv.Value != "disk" && kv.Value != "memory" && kv.Value != redisStorage {
			return bad(`must be "disk", "memory" or "redis"`)
		}
		if kv.Value == redisStorage && r.cfg.RedisURL == "" {
			return bad("needs the broker to have a Redis server (serve --redis-url)")
		}
		tc.Storage = kv.Value
	case ConfigFsync:
		p, err := ParseFsync(kv.Value)
		if err != nil {
			return bad(err.Error())
		}
		tc.Fsync = p
	case ConfigRetention:
		d, err := time.ParseDuration(kv.Value)
		if err != nil || d < 0 {
			return bad("must be a duration such as 1h or 0 (keep forever)")
		}
		tc.Retention = d
	case ConfigRetentionBytes:
		n, err := strconv.ParseInt(kv.Value, 10, 64)
		if err != nil || n < 0 {
			return bad("must be a number of bytes, 0 for no bound")
		}
		tc.RetentionBytes = n
	case ConfigDeadLetterTopic:
		if kv.Value != "" && wire.ValidateQualifiedName(kv.Value) != nil {
			return bad("must be a valid topic name, or empty for <topic>.dlq")
		}
		tc.DeadLetterTopic = kv.Value
	case ConfigMaxDeliveries:
		n, err := strconv.Atoi(kv.Value)
		if err != nil || n < 0 || n > 1<<20 {
			return bad("must be 1..1048576, or 0 for the default")
		}
		tc.MaxDeliveries = n
	case ConfigEncryption:
		if kv.Value != "on" && kv.Value != "off" {
			return bad(`must be "on" or "off"`)
		}
		tc.Encryption = kv.Value == "on"
	case ConfigReplicas:
		n, err := strconv.Atoi(kv.Value)
		if err != nil || n != 1 && n != 3 && n != 5 {
			return bad("must be 1, 3 or 5")
		}
		if n > 1 && len(r.cfg.Peers) == 0 {
			return bad("above 1 needs a cluster (serve --peers)")
		}
		tc.Replicas = n
	default:
		return invalid("unknown topic config key " + strconv.Quote(kv.Key))
	}
	return nil
}

// create adds a topic, opening its partitions' logs, and records it in the
// metadata file. With existOK it returns an existing topic of that name
// instead of failing (auto-creation racing with another creator); created
// tells the two apart.
func (r *registry) create(name string, tc TopicConfig, existOK bool) (t *Topic, created bool, err error) {
	if err := wire.ValidateQualifiedName(name); err != nil {
		return nil, false, err
	}
	if tc.DeadLetterTopic == name {
		return nil, false, invalid("a topic cannot be its own dead-letter topic")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Snapshot()
	if t, ok := old[name]; ok {
		if existOK {
			return t, false, nil
		}
		return nil, false, wire.Errorf(wire.CodeTopicExists, "topic "+name+" exists")
	}
	if len(old) >= r.cfg.MaxTopics {
		return nil, false, wire.Errorf(wire.CodeTooManyTopics, "the broker holds its maximum of "+strconv.Itoa(r.cfg.MaxTopics)+" topics")
	}
	if err := r.checkTenantQuota(old, name, tc.Partitions); err != nil {
		return nil, false, err
	}
	if tc.Encryption {
		tk, err := r.newTopicKeys(name)
		if err != nil {
			return nil, false, err
		}
		r.keys[name] = tk
	}
	t, err = r.open(name, tc)
	if err != nil {
		delete(r.keys, name)
		return nil, false, wire.Errorf(storage.Code(err), "create topic "+name+": "+err.Error())
	}
	m := maps.Clone(old)
	m[name] = t
	if err := r.persist(m); err != nil {
		r.drop(t)
		delete(r.keys, name)
		return nil, false, wire.Errorf(storage.Code(err), "record topic "+name+": "+err.Error())
	}
	r.snap.Replace(m)
	r.adopt(t)
	return t, true, nil
}

// checkTenantQuota refuses a topic that would take its tenant past its
// topic or partition quota; r.mu held.
func (r *registry) checkTenantQuota(topics map[string]*Topic, name string, partitions int) error {
	tn := wire.TenantOf(name)
	if tn == "" || r.quotas == nil {
		return nil
	}
	q := r.quotas(tn)
	if q.Topics == 0 && q.Partitions == 0 {
		return nil
	}
	var n, parts int64
	for other, t := range topics {
		if wire.TenantOf(other) == tn {
			n++
			parts += int64(len(t.Parts))
		}
	}
	if q.Topics > 0 && n+1 > q.Topics {
		return wire.Errorf(wire.CodeQuotaExceeded, "tenant "+tn+" has its quota of "+strconv.FormatInt(q.Topics, 10)+" topics")
	}
	if q.Partitions > 0 && parts+int64(partitions) > q.Partitions {
		return wire.Errorf(wire.CodeQuotaExceeded, "tenant "+tn+" has "+strconv.FormatInt(parts, 10)+
			" partitions of its quota of "+strconv.FormatInt(q.Partitions, 10)+"; this topic would add "+strconv.Itoa(partitions))
	}
	return nil
}

// tenantStorage sums the bytes each tenant's partitions hold.
func (r *registry) tenantStorage() map[string]int64 {
	out := map[string]int64{}
	for _, t := range r.list() {
		tn := wire.TenantOf(t.Name)
		if tn == "" {
			continue
		}
		for _, p := range t.Parts {
			out[tn] += p.Log.Stats().Bytes
		}
	}
	return out
}

// open builds a topic and opens (recovering) its partitions' logs; a log
// that cannot be opened fails it (a create).
func (r *registry) open(name string, tc TopicConfig) (*Topic, error) {
	return r.build(name, tc, nil)
}

// build builds a topic and opens its partitions' logs. With sum (at
// load), a log that cannot be opened leaves its partition offline
// (storage.OfflineLog) instead of failing the topic, so one bad directory
// keeps no other partition from serving; what recovery found is added to
// sum.
func (r *registry) build(name string, tc TopicConfig, sum *loadSummary) (*Topic, error) {
	parts := make([]*shard.Partition, tc.Partitions)
	base := topicHash(name)
	var reps []shard.Replicator
	if r.repl != nil {
		reps = make([]shard.Replicator, tc.Partitions)
	}
	for i := range parts {
		var l storage.Log
		var err error
		if r.repl != nil {
			l, reps[i], err = r.repl.open(name, i, tc, func(dir string) (storage.Log, error) {
				return r.openLogAt(dir, name, i, tc, sum)
			})
		} else {
			l, err = r.openLog(name, i, tc, sum)
		}
		if err != nil && sum == nil {
			r.dropParts(name, parts)
			return nil, err
		}
		if err != nil {
			r.cfg.Logger.Error("partition offline: its log cannot be opened; the other partitions serve, "+
				"and a restart after a repair brings it back", "topic", name, "partition", i,
				"path", partitionDir(r.cfg.DataDir, name, i), "err", err)
			l = storage.NewOfflineLog(err)
			sum.offline++
		}
		s := r.shards[(base+uint32(i))%uint32(len(r.shards))]
		parts[i] = shard.NewPartition(name, int32(i), s, l, tc.Fsync)
		if r.repl != nil {
			// Its Raft group applies the retention (not the shard's
			// driver): up to what it applied, moving its compaction point.
			parts[i].Replica = reps[i]
		}
		parts[i].SetRetention(tc.Retention, tc.RetentionBytes)
		r.restoreProducers(parts[i])
	}
	if r.repl != nil {
		for i, p := range parts {
			if err := r.repl.start(p, tc); err != nil {
				for _, q := range parts[:i] {
					r.repl.stop(q)
				}
				r.dropParts(name, parts)
				return nil, err
			}
		}
	}
	return topic.New(name, tc, parts), nil
}

// openLog opens a partition's log. Recovery is logged per partition at
// Debug, and at Warn or Error when it cut a torn tail or found corruption:
// after a crash every partition is recovered, and a line each would bury
// the ones that matter. load logs the totals.
func (r *registry) openLog(topic string, partition int, tc TopicConfig, sum *loadSummary) (storage.Log, error) {
	return r.openLogAt(partitionDir(r.cfg.DataDir, topic, partition), topic, partition, tc, sum)
}

// openLogAt is openLog in directory dir.
func (r *registry) openLogAt(dir, topic string, partition int, tc TopicConfig, sum *loadSummary) (storage.Log, error) {
	switch tc.Storage {
	case "memory":
		return storage.NewMemLog(r.cfg.MemoryTopicBytes), nil
	case redisStorage:
		return r.openRedisLog(topic, partition, sum == nil)
	}
	segBytes := r.cfg.SegmentBytes
	if topic == OffsetsTopic {
		segBytes = r.cfg.OffsetsSegmentBytes
	}
	l, rec, err := storage.OpenDiskLog(storage.DiskConfig{
		FS: r.cfg.FS, Dir: dir, SegmentBytes: segBytes,
		SegmentAge: r.cfg.SegmentAge, Cache: r.cache, Reclaim: r.trash, Files: r.files, Keys: r.keyring(topic),
		Logger: r.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	sum.add(rec)
	level := slog.LevelDebug
	switch {
	case len(rec.Corrupt) > 0:
		level = slog.LevelError
	case rec.Truncated > 0:
		level = slog.LevelWarn
	}
	r.cfg.Logger.Log(context.Background(), level, "recovered partition", "topic", topic, "partition", partition,
		"clean", rec.Clean, "segments", rec.Segments, "scanned", rec.Scanned, "truncated_bytes", rec.Truncated,
		"padding_bytes", rec.Padding, "corrupt", fmt.Sprint(rec.Corrupt))
	return l, nil
}

// restoreProducers rebuilds a partition's idempotent producers from its
// log (driver.RestoreProducers). A log it cannot read costs only the
// producers it could not read, which start unknown: it is logged, and the
// partition serves.
func (r *registry) restoreProducers(p *shard.Partition) {
	scanned, err := driver.RestoreProducers(p)
	if err != nil {
		r.cfg.Logger.Warn("idempotent producers not fully rebuilt: a retry of theirs may be stored twice",
			"topic", p.Topic, "partition", p.ID, "err", err)
		return
	}
	if scanned {
		r.cfg.Logger.Debug("idempotent producers rebuilt from the log", "topic", p.Topic, "partition", p.ID,
			"producers", p.Producers())
	}
}

// loadSummary adds up what load found, for its one line at Info.
type loadSummary struct {
	topics, partitions, segments, scanned, corrupt, offline int
	truncated                                               int64
}

// add counts one opened partition's recovery; a nil summary (a create)
// counts nothing.
func (sum *loadSummary) add(rec storage.Recovery) {
	if sum == nil {
		return
	}
	sum.segments += rec.Segments
	sum.scanned += rec.Scanned
	sum.truncated += rec.Truncated
	sum.corrupt += len(rec.Corrupt)
}

// removeTree deletes a directory nothing has open: through the reclaimer
// once there is one, since it may hold gigabytes.
func (r *registry) removeTree(dir string) error {
	if r.trash != nil {
		return r.trash.Remove(dir)
	}
	return r.cfg.FS.RemoveAll(dir)
}

// trashDir, under the data directory, holds what the reclaimer has yet to
// delete.
const trashDir = "trash"

func partitionDir(dataDir, topic string, partition int) string {
	return dataDir + "/topics/" + topic + "/" + strconv.Itoa(partition)
}

// adopt registers a topic's partitions with their shards (retention).
func (r *registry) adopt(t *Topic) {
	for _, p := range t.Parts {
		if p.Adopt() == nil {
			p.Shard.Wake()
		}
	}
}

// drop closes the logs of a topic that never became visible.
func (r *registry) drop(t *Topic) { r.dropParts(t.Name, t.Parts) }

// dropParts closes the logs of a topic's partitions, those opened so far,
// and removes its directory. A cluster's partitions are only closed: their
// logs are Raft logs that may hold entries this node acknowledged and its
// votes (a topic opened again at a restart, or whose group ran before a
// later partition failed), which only the topic's deletion may remove.
func (r *registry) dropParts(name string, parts []*shard.Partition) {
	for _, p := range parts {
		if p != nil {
			if r.repl != nil {
				r.repl.stop(p)
				_ = p.Log.Close()
				continue
			}
			_ = p.Log.Drop()
		}
	}
	if r.repl == nil {
		_ = r.cfg.FS.RemoveAll(r.cfg.DataDir + "/topics/" + name)
	}
}

// update changes a topic's runtime-changeable config (every key but
// storage): the new config is recorded in the metadata file first, then
// applied to the partitions.
func (r *registry) update(name string, kvs []wire.KV) (*Topic, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.snap.Snapshot()
	t, ok := m[name]
	if !ok {
		return nil, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
	}
	old := t.Config()
	tc, rotate, err := r.updatedConfig(name, old, kvs)
	if err != nil {
		return nil, err
	}
	if err := r.persistWith(m, name, &tc); err != nil {
		return nil, wire.Errorf(storage.Code(err), "record config of "+name+": "+err.Error())
	}
	t.SetConfig(&tc)
	if rotate {
		if err := r.rotateKey(name, &tc); err != nil {
			return nil, err
		}
	}
	for _, p := range t.Parts {
		p.SetRetention(tc.Retention, tc.RetentionBytes)
		if tc.Fsync != old.Fsync {
			if err := p.SetSync(tc.Fsync); err != nil {
				return t, wire.Errorf(wire.CodeShuttingDown, err.Error())
			}
			p.Shard.Wake()
			if r.repl != nil {
				r.repl.setSync(p, tc.Fsync)
			}
		}
	}
	return t, nil
}

// checkUpdate reports whether kvs would be a valid update of topic name.
func (r *registry) checkUpdate(name string, kvs []wire.KV) error {
	t := r.get([]byte(name))
	if t == nil {
		return wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
	}
	_, _, err := r.updatedConfig(name, t.Config(), kvs)
	return err
}

// updatedConfig is old with the changes of kvs, checked, and whether kvs
// asks for a new data key.
func (r *registry) updatedConfig(name string, old TopicConfig, kvs []wire.KV) (TopicConfig, bool, error) {
	tc := old
	rotate := false
	for _, kv := range kvs {
		switch kv.Key {
		case ConfigStorage:
			if kv.Value != old.Storage {
				return tc, false, invalid("storage cannot be changed after a topic is created")
			}
			continue
		case ConfigEncryption:
			if kv.Value != topic.OnOff(old.Encryption) {
				return tc, false, invalid("encryption cannot be changed after a topic is created; " +
					"an encrypted topic's data key is rotated with " + ActionRotateKey)
			}
			continue
		case ConfigReplicas:
			if kv.Value != strconv.Itoa(max(old.Replicas, 1)) && kv.Value != strconv.Itoa(old.Replicas) {
				return tc, false, invalid("replicas cannot be changed after a topic is created")
			}
			continue
		case ActionRotateKey:
			if kv.Value != "true" {
				return tc, false, invalid(ActionRotateKey + ` takes "true", got ` + strconv.Quote(kv.Value))
			}
			rotate = true
			continue
		}
		if err := r.applyKV(&tc, kv); err != nil {
			return tc, false, err
		}
	}
	if (tc.Storage == "memory" || tc.Storage == redisStorage) && tc.Fsync != old.Fsync {
		return tc, false, invalid("fsync does not apply to a " + tc.Storage + " topic")
	}
	if tc.DeadLetterTopic == name {
		return tc, false, invalid("a topic cannot be its own dead-letter topic")
	}
	if name == OffsetsTopic && (tc.Retention != 0 || tc.RetentionBytes != 0) {
		return tc, false, invalid("the retention of " + OffsetsTopic + " stays 0: each group's last record is " +
			"its committed offsets, however old (idle groups expire after the broker's group retention)")
	}
	return tc, rotate, nil
}

// remove deletes a topic: it is forgotten by the metadata file first, then
// each partition's shard drops its log and data.
func (r *registry) remove(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Snapshot()
	t, ok := old[name]
	if !ok {
		return wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
	}
	m := maps.Clone(old)
	delete(m, name)
	if err := r.persist(m); err != nil {
		return wire.Errorf(storage.Code(err), "record deletion of "+name+": "+err.Error())
	}
	r.snap.Replace(m)
	delete(r.keys, name)
	if r.repl != nil {
		for _, p := range t.Parts {
			r.repl.stop(p)
		}
	}
	var pending atomic.Int32
	pending.Store(int32(len(t.Parts)))
	retired := make(chan struct{})
	for _, p := range t.Parts {
		if err := p.Delete(func() {
			if pending.Add(-1) == 0 {
				close(retired)
			}
		}); err != nil {
			return wire.Errorf(wire.CodeShuttingDown, err.Error())
		}
		p.Shard.Wake()
	}
	// Until its partitions are retired and their logs dropped, the topic's
	// directory is theirs: a topic created again under this name meanwhile
	// would open the old segments, and then lose its own to the late drop.
	// So the registry stays locked until then (the shards take no registry
	// lock, and always get to their inbox). This runs off the event loops
	// (offloop.go, the admin API), so the wait holds up no connection.
	for waited := time.Duration(0); ; waited += deleteWait {
		select {
		case <-retired:
			r.dropLogs(t)
			return nil
		case <-time.After(deleteWait):
			r.cfg.Logger.Warn("topic delete: still waiting for the shards to retire its partitions",
				"topic", name, "waited", waited+deleteWait)
		}
	}
}

// replacePartition builds partition i of a cluster topic anew because
// this node's part in its group changed: a replica of it was added here
// (its group starts, empty, and catches up from the leader), or the
// replica here left the group (the group goes on without it). The old
// partition is retired, and its log dropped when it held one: the data
// now lives on the group's other replicas.
func (r *registry) replacePartition(name string, i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Snapshot()
	t, ok := old[name]
	if !ok || r.repl == nil || i < 0 || i >= len(t.Parts) {
		return wire.Errorf(wire.CodeUnknownTopic, "no partition "+strconv.Itoa(i)+" of "+strconv.Quote(name))
	}
	tc := t.Config()
	prev := t.Parts[i]
	// The old partition's group stops first: the new one may be the same
	// group, which a host runs once.
	r.repl.stop(prev)
	l, rep, err := r.repl.open(name, i, tc, func(dir string) (storage.Log, error) {
		return r.openLogAt(dir, name, i, tc, nil)
	})
	if err != nil {
		return err
	}
	p := shard.NewPartition(name, int32(i), prev.Shard, l, tc.Fsync)
	p.Replica = rep
	p.SetRetention(tc.Retention, tc.RetentionBytes)
	r.restoreProducers(p)
	if err := r.repl.start(p, tc); err != nil {
		_ = l.Close()
		return err
	}
	parts := slices.Clone(t.Parts)
	parts[i] = p
	nt := topic.New(name, tc, parts)
	m := maps.Clone(old)
	m[name] = nt
	r.snap.Replace(m)
	if p.Adopt() == nil {
		p.Shard.Wake()
	}
	// The old log goes once its shard has retired the partition, before
	// this returns: the group's directory may be opened again by a later
	// move back here, which must not meet a drop still under way. As in
	// remove, the registry stays locked meanwhile (the shards take no
	// registry lock), and this runs off the event loops (the applier).
	retired := make(chan struct{})
	if err := prev.Delete(func() { close(retired) }); err != nil {
		return nil // the broker is stopping: the old log is only closed
	}
	prev.Shard.Wake()
	<-retired
	if err := prev.Log.Drop(); err != nil {
		r.cfg.Logger.Warn("removing a moved replica's log", "topic", name, "partition", i, "err", err)
	}
	return nil
}

// dropLogs removes a deleted topic's logs and directory.
func (r *registry) dropLogs(t *Topic) {
	for _, p := range t.Parts {
		if err := p.Log.Drop(); err != nil {
			r.cfg.Logger.Warn("removing a deleted partition's log", "topic", t.Name, "partition", p.ID, "err", err)
		}
	}
	_ = r.cfg.FS.RemoveAll(r.cfg.DataDir + "/topics/" + t.Name)
}

// deleteWait is how often a topic delete that waits for its shards says so.
const deleteWait = 30 * time.Second

// topicHash spreads a topic's partitions over the shards starting at a
// point that depends on its name, so single-partition topics do not all
// land on shard 0.
func topicHash(name string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return h.Sum32()
}

// The metadata file records every topic and its config, so they survive a
// restart. It is replaced atomically (write, fsync, rename, fsync the
// directory) on every create and delete.
const metaFile = "topics.json"

// metaVersionEncrypted is the metadata file's version while it records
// an encrypted topic; 1 otherwise, so that a data directory without one
// stays readable by older brokers. An older broker refuses version 2 at
// start: it would open an encrypted topic as a plain one, take its sealed
// batches for damage and, after an unclean shutdown, cut them as a torn
// tail.
const metaVersionEncrypted = 2

type metaTopic struct {
	Name            string `json:"name"`
	Partitions      int    `json:"partitions"`
	MaxSubscribers  int    `json:"max_subscribers"`
	Storage         string `json:"storage"`
	Fsync           string `json:"fsync"`
	Retention       string `json:"retention"`
	RetentionBytes  int64  `json:"retention_bytes"`
	DeadLetterTopic string `json:"dead_letter_topic,omitempty"`
	MaxDeliveries   int    `json:"max_deliveries,omitempty"`
	// An encrypted topic's data keys, wrapped (keys.go), and the one new
	// batches are sealed with.
	Encryption bool      `json:"encryption,omitempty"`
	Keys       []metaKey `json:"keys,omitempty"`
	CurrentKey uint32    `json:"current_key,omitempty"`
}

type metaFileV1 struct {
	Version int         `json:"version"`
	Topics  []metaTopic `json:"topics"`
}

func (r *registry) persist(m map[string]*Topic) error { return r.persistWith(m, "", nil) }

// persistWith is persist with topic name's config replaced by next: an
// update is recorded before anyone sees it.
func (r *registry) persistWith(m map[string]*Topic, name string, next *TopicConfig) error {
	if r.repl != nil {
		return nil // a cluster's topics are recorded by its controller
	}
	meta := metaFileV1{Version: 1}
	for _, n := range slices.Sorted(maps.Keys(m)) {
		tc := m[n].Config()
		if n == name {
			tc = *next
		}
		mt := metaTopic{Name: n, Partitions: tc.Partitions,
			MaxSubscribers: tc.MaxSubscribers, Storage: tc.Storage, Fsync: tc.Fsync.String(),
			Retention: tc.Retention.String(), RetentionBytes: tc.RetentionBytes,
			DeadLetterTopic: tc.DeadLetterTopic, MaxDeliveries: tc.MaxDeliveries, Encryption: tc.Encryption}
		if tk := r.keys[n]; tk != nil {
			mt.Keys, mt.CurrentKey = tk.wrapped, tk.current
		}
		meta.Topics = append(meta.Topics, mt)
		if mt.Encryption {
			meta.Version = metaVersionEncrypted
		}
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFileAtomic(r.cfg.FS, r.cfg.DataDir+"/"+metaFile, b, true)
}

// load opens every topic recorded in the metadata file, recovering its
// logs, and removes directories of topics that are not recorded (a delete
// that was interrupted).
func (r *registry) load() error {
	if r.repl != nil {
		return nil // a cluster's topics come from its controller's log
	}
	start := time.Now()
	if err := storage.MkdirDurable(r.cfg.FS, r.cfg.DataDir+"/topics", 2); err != nil {
		return err
	}
	b, err := storage.ReadFile(r.cfg.FS, r.cfg.DataDir+"/"+metaFile)
	if errors.Is(err, fs.ErrNotExist) {
		r.logLoaded(&loadSummary{}, time.Since(start))
		return nil
	}
	if err != nil {
		return err
	}
	var meta metaFileV1
	if err := json.Unmarshal(b, &meta); err != nil {
		return fmt.Errorf("engine: %s: %w", metaFile, err)
	}
	if meta.Version != 1 && meta.Version != metaVersionEncrypted {
		return fmt.Errorf("engine: %s has version %d; this broker reads versions 1 and 2", metaFile, meta.Version)
	}
	m := map[string]*Topic{}
	var sum loadSummary
	for _, mt := range meta.Topics {
		tc, err := mt.config()
		if err != nil {
			return fmt.Errorf("engine: topic %s in %s: %w", mt.Name, metaFile, err)
		}
		if tc.Encryption {
			tk, err := r.unwrapKeys(mt.Name, mt.Keys, mt.CurrentKey)
			if err != nil {
				return fmt.Errorf("engine: %w", err)
			}
			r.keys[mt.Name] = tk
		}
		t, err := r.build(mt.Name, tc, &sum)
		if err != nil {
			return fmt.Errorf("engine: open topic %s: %w", mt.Name, err)
		}
		m[mt.Name] = t
		sum.topics++
		sum.partitions += len(t.Parts)
	}
	r.snap.Replace(m)
	for _, t := range m {
		r.adopt(t)
	}
	if err := r.removeStrays(m); err != nil {
		return err
	}
	r.logLoaded(&sum, time.Since(start))
	return nil
}

// logLoaded logs what load found in one line: at Info, or at Warn when a
// partition is offline or corruption was found.
func (r *registry) logLoaded(sum *loadSummary, took time.Duration) {
	level := slog.LevelInfo
	if sum.offline > 0 || sum.corrupt > 0 {
		level = slog.LevelWarn
	}
	r.cfg.Logger.Log(context.Background(), level, "recovered topics", "topics", sum.topics,
		"partitions", sum.partitions, "segments", sum.segments, "scanned", sum.scanned,
		"truncated_bytes", sum.truncated, "corrupt_ranges", sum.corrupt, "offline_partitions", sum.offline,
		"took", took.Round(time.Millisecond))
}

func (mt metaTopic) config() (TopicConfig, error) {
	fsync, err := ParseFsync(mt.Fsync)
	if err != nil {
		return TopicConfig{}, err
	}
	ret, err := time.ParseDuration(mt.Retention)
	if err != nil {
		return TopicConfig{}, err
	}
	if mt.Partitions < 1 || (mt.Storage != "disk" && mt.Storage != "memory" && mt.Storage != redisStorage) {
		return TopicConfig{}, errors.New("bad partitions or storage")
	}
	if mt.Encryption != (len(mt.Keys) > 0) || mt.Encryption && mt.Storage != "disk" {
		return TopicConfig{}, errors.New("encryption, keys and storage do not agree")
	}
	return TopicConfig{Partitions: mt.Partitions, MaxSubscribers: mt.MaxSubscribers, Storage: mt.Storage,
		Fsync: fsync, Retention: ret, RetentionBytes: mt.RetentionBytes,
		DeadLetterTopic: mt.DeadLetterTopic, MaxDeliveries: mt.MaxDeliveries, Encryption: mt.Encryption}, nil
}

func (r *registry) removeStrays(m map[string]*Topic) error {
	entries, err := r.cfg.FS.ReadDir(r.cfg.DataDir + "/topics")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := m[e.Name()]; !ok {
			r.cfg.Logger.Info("removing data of a topic that is no longer recorded", "topic", e.Name())
			if err := r.removeTree(r.cfg.DataDir + "/topics/" + e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// closeAll closes every topic's logs after the shards have stopped.
func (r *registry) closeAll() error {
	var errs []error
	for _, t := range r.list() {
		for _, p := range t.Parts {
			if err := driver.SaveProducers(p); err != nil {
				r.cfg.Logger.Warn("idempotent producers not saved: the next start rebuilds them from the log",
					"topic", t.Name, "partition", p.ID, "err", err)
			}
			if err := p.Log.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s/%d: %w", t.Name, p.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}
