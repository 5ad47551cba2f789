package engine

import (
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Metrics (docs/METRICS.md lists them all).
//
// Nothing is recorded per message. Counters live where they are bumped,
// once per batch: the shards' and partitions' atomics, the engine's
// connection and error counters. A scrape reads them and writes the text
// format itself, each family with its HELP and TYPE lines (promtext). The histograms are per shard, in the engine's own
// metrics.Set (several engines share a test process, so nothing goes in
// the library's global set), fed by the shard's Observer once per batch,
// ack and fsync; per shard so that shards never share a histogram's mutex.

// Histogram buckets.
var (
	// batchBuckets are messages per publish batch: 1 to 65536.
	batchBuckets = metrics.ExponentialBuckets(1, 2, 17)
	// latencyBuckets are seconds: 25µs to about 1.6s.
	latencyBuckets = metrics.ExponentialBuckets(25e-6, 2, 17)
)

// shardMetrics is a shard's histograms and its shard.Observer.
type shardMetrics struct {
	batch, ack, fsync *metrics.PrometheusHistogram
}

func newShardMetrics(set *metrics.Set, id int) *shardMetrics {
	l := `{shard="` + strconv.Itoa(id) + `"}`
	return &shardMetrics{
		batch: set.NewPrometheusHistogramExt(mBatchSize.Name+l, batchBuckets),
		ack:   set.NewPrometheusHistogramExt(mAckTime.Name+l, latencyBuckets),
		fsync: set.NewPrometheusHistogramExt(mFsyncTime.Name+l, latencyBuckets),
	}
}

// PublishBatch implements shard.Observer.
func (m *shardMetrics) PublishBatch(n int) { m.batch.Update(float64(n)) }

// Acked implements shard.Observer.
func (m *shardMetrics) Acked(d time.Duration) { m.ack.Update(d.Seconds()) }

// Fsynced implements shard.Observer.
func (m *shardMetrics) Fsynced(d time.Duration) { m.fsync.Update(d.Seconds()) }

// writeMetrics writes every metric, each family's HELP and TYPE lines
// before its samples; httpapi serves them at GET /metrics. Each family's
// lines are written together, as the text format requires. A family is
// announced even when it has no samples yet (no errors, no plugins), so a
// scrape always says what the broker can report.
func (e *Engine) writeMetrics(w io.Writer) {
	var set bytes.Buffer
	e.metricSet.WritePrometheus(&set)
	promtext.Annotate(w, set.Bytes(), histogramFamilies)
	e.writeBrokerMetrics(w)
	e.srv.WriteMetrics(w)
	e.writeShardMetrics(w)
	e.writeSecurityMetrics(w)
	e.writePartitionMetrics(w)
	e.writePluginMetrics(w)
	e.gw.Metrics().WritePrometheus(w)
	if e.ws != nil {
		e.ws.WritePrometheus(w)
	}
	if e.isReady() { // groups are loaded
		e.writeGroupMetrics(w)
	}
	writeRuntimeMetrics(w)
}

// The families of the engine's metrics.Set, the per-shard histograms.
var (
	mBatchSize = promtext.NewHistogram("ratatoskr_publish_batch_messages", "Messages per publish batch, by shard.")
	mAckTime   = promtext.NewHistogram("ratatoskr_publish_ack_seconds",
		"Seconds from a publish batch entering its shard to its ack being queued (with fsync=always the write and fsync included), by shard.")
	mFsyncTime        = promtext.NewHistogram("ratatoskr_fsync_seconds", "Seconds one fsync of a partition's log took, by shard.")
	histogramFamilies = familyMap(mBatchSize, mAckTime, mFsyncTime)
)

func familyMap(fs ...promtext.Family) map[string]promtext.Family {
	m := make(map[string]promtext.Family, len(fs))
	for _, f := range fs {
		m[f.Name] = f
	}
	return m
}

// The broker-wide families.
var (
	mReady       = promtext.NewGauge("ratatoskr_ready", "1 when the broker should get traffic (recovered, native listener up, not shutting down), else 0.")
	mUptime      = promtext.NewGauge("ratatoskr_uptime_seconds", "Seconds since the broker started.")
	mConnections = promtext.NewGauge("ratatoskr_connections", "Client connections open now.")
	mAccepted    = promtext.NewCounter("ratatoskr_connections_accepted_total", "Client connections accepted.")
	mSlowCuts    = promtext.NewCounter("ratatoskr_slow_consumer_disconnects_total",
		"Connections disconnected as slow consumers, by reason: connection_limit, timeout, broker_limit.")
	mDetached = promtext.NewCounter("ratatoskr_subscriptions_detached_total",
		"Live subscriptions detached from subscribers whose socket took nothing for --stuck-consumer-after.")
	mResumed = promtext.NewCounter("ratatoskr_subscriptions_resumed_total",
		"Detached subscriptions resumed with a replay once their subscriber read again.")
	mOutbound = promtext.NewGauge("ratatoskr_outbound_bytes",
		"Bytes held unsent for all connections: outboxes, writes in progress and network buffers.")
	mOutboundLimit = promtext.NewGauge("ratatoskr_outbound_bytes_limit",
		"Bytes all connections may hold unsent before the furthest behind are disconnected (--max-outbound-bytes).")
	mDirect      = promtext.NewCounter("ratatoskr_direct_writes_total", "Outbox flushes written to a subscriber's socket by the event loop that handled the publish.")
	mDirectShort = promtext.NewCounter("ratatoskr_direct_writes_short_total",
		"Direct writes the socket did not take whole; the subscriber's own loop wrote the rest.")
	mTopics         = promtext.NewGauge("ratatoskr_topics", "Topics that exist now.")
	mFetchesWaiting = promtext.NewGauge("ratatoskr_fetches_waiting", "Long-polling Fetches waiting for data.")
	mFetchesRefused = promtext.NewCounter("ratatoskr_fetches_refused_total",
		"Fetches refused with LIMIT_EXCEEDED because their connection had --max-fetches-per-connection outstanding.")
	mReclaimed = promtext.NewCounter("ratatoskr_storage_reclaimed_bytes_total",
		"Bytes of deleted segments (retention, topic deletes) the background reclaimer has freed.")
	mOpenFiles      = promtext.NewGauge("ratatoskr_storage_open_files", "Partition segment files open now.")
	mOpenFilesLimit = promtext.NewGauge("ratatoskr_storage_open_files_limit",
		"Segment files the broker keeps open at most while idle ones can be closed (--max-open-files).")
	mFileOpens     = promtext.NewCounter("ratatoskr_storage_file_opens_total", "Segment files opened.")
	mFileEvictions = promtext.NewCounter("ratatoskr_storage_file_evictions_total",
		"Segment files closed to stay within the open file budget.")
	mEvictionSyncs = promtext.NewCounter("ratatoskr_storage_file_eviction_syncs_total",
		"Fsyncs the broker ran so that it could close a file holding unsynced writes for the budget.")
	mErrors = promtext.NewCounter("ratatoskr_errors_total", "Error frames sent to clients, by protocol error code.")
)

func (e *Engine) writeBrokerMetrics(w io.Writer) {
	st := e.Stats()
	c := e.srv.Counters()
	ready := uint64(0)
	if len(e.notReadyReasons(false)) == 0 {
		ready = 1
	}
	mReady.WriteUint(w, ready)
	mUptime.WriteFloat(w, e.uptime().Seconds())
	mConnections.WriteUint(w, uint64(max(st.Connections, 0)))
	mAccepted.WriteUint(w, st.Accepted)
	mSlowCuts.WriteHeader(w)
	for why := outbox.SlowLimit; why < outbox.NumSlowReasons; why++ {
		mSlowCuts.WriteSample(w, `{reason=`+promtext.Label(why.String())+`}`, strconv.FormatUint(c.SlowCuts[why], 10))
	}
	var detached uint64
	for _, s := range e.shards {
		detached += s.Detached()
	}
	mDetached.WriteUint(w, detached)
	mResumed.WriteUint(w, c.Resumed)
	mOutbound.WriteUint(w, uint64(max(c.OutboundBytes, 0)))
	mOutboundLimit.WriteUint(w, uint64(c.OutboundLimit))
	mDirect.WriteUint(w, st.DirectWrites)
	mDirectShort.WriteUint(w, st.DirectShort)
	mTopics.WriteUint(w, uint64(st.Topics))
	mFetchesWaiting.WriteUint(w, uint64(max(c.FetchesWaiting, 0)))
	mFetchesRefused.WriteUint(w, c.FetchesRefused)
	if e.reclaim != nil {
		mReclaimed.WriteUint(w, uint64(e.reclaim.Freed()))
	}
	fc := e.topics.files.Stats()
	mOpenFiles.WriteUint(w, uint64(fc.Open))
	mOpenFilesLimit.WriteUint(w, uint64(fc.Capacity))
	mFileOpens.WriteUint(w, fc.Opens)
	mFileEvictions.WriteUint(w, fc.Evictions)
	mEvictionSyncs.WriteUint(w, fc.EvictionSyncs)
	mErrors.WriteHeader(w)
	for code, n := range c.Errors {
		if n > 0 {
			mErrors.WriteSample(w, `{code=`+promtext.Label(errCodeName(code))+`}`, strconv.FormatUint(n, 10))
		}
	}
}

// The per-shard families.
var (
	mInboxDepth = promtext.NewGauge("ratatoskr_shard_inbox_depth", "Operations waiting in the shard's inbox.")
	mInboxCap   = promtext.NewGauge("ratatoskr_shard_inbox_capacity",
		"Operations the shard's inbox holds; a full inbox makes event loops wait.")
	mBusy = promtext.NewCounter("ratatoskr_shard_busy_seconds_total",
		"Seconds the shard spent processing; its rate is the shard's busy ratio.")
	mShardBatches = promtext.NewCounter("ratatoskr_shard_published_batches_total", "Publish batches the shard appended.")
	mDuplicates   = promtext.NewCounter("ratatoskr_shard_duplicate_batches_total",
		"Idempotent batches sent again (after a lost connection) that the shard answered with their original offsets instead of storing them twice.")
)

func (e *Engine) writeShardMetrics(w io.Writer) {
	family := func(f promtext.Family, value func(s *driver.Driver) string) {
		f.WriteHeader(w)
		for _, s := range e.shards {
			f.WriteSample(w, `{shard="`+strconv.Itoa(s.ID())+`"}`, value(s))
		}
	}
	family(mInboxDepth, func(s *driver.Driver) string { return strconv.Itoa(s.InboxLen()) })
	family(mInboxCap, func(s *driver.Driver) string { return strconv.Itoa(s.InboxCap()) })
	family(mBusy, func(s *driver.Driver) string { return promtext.FormatFloat(s.BusyTime().Seconds()) })
	family(mShardBatches, func(s *driver.Driver) string {
		b, _ := s.Stats()
		return strconv.FormatUint(b, 10)
	})
	family(mDuplicates, func(s *driver.Driver) string { return strconv.FormatUint(s.Shard().Duplicates(), 10) })
}

// partitionSample is what a scrape reads of one partition.
type partitionSample struct {
	labels string // {topic="…",partition="…"}
	c      shard.Counters
	subs   int
	log    storage.LogStats
}

// The per-partition families, labelled by topic and partition.
var (
	mPublished      = promtext.NewCounter("ratatoskr_published_messages_total", "Messages appended to the partition.")
	mPublishedBytes = promtext.NewCounter("ratatoskr_published_bytes_total", "Record-batch bytes appended to the partition.")
	mDelivered      = promtext.NewCounter("ratatoskr_delivered_messages_total",
		"Messages pushed to live subscribers, once per subscriber reached; replays from the log are not counted.")
	mDeliveredBytes = promtext.NewCounter("ratatoskr_delivered_bytes_total",
		"Deliver-frame bytes pushed to live subscribers, once per subscriber.")
	mSubscribers    = promtext.NewGauge("ratatoskr_subscribers", "Live push subscribers of the partition.")
	mEndOffset      = promtext.NewGauge("ratatoskr_partition_end_offset", "The next offset the partition gives out.")
	mStorageBytes   = promtext.NewGauge("ratatoskr_storage_bytes", "Bytes of the partition's log.")
	mSegments       = promtext.NewGauge("ratatoskr_storage_segments", "Segment files of the partition's log.")
	mCorruptRanges  = promtext.NewGauge("ratatoskr_storage_corrupt_ranges", "Ranges of offsets found corrupt in the partition's log; readers skip them.")
	mCorruptOffsets = promtext.NewGauge("ratatoskr_storage_corrupt_messages", "Offsets inside the partition's corrupt ranges.")
	mReadErrors     = promtext.NewCounter("ratatoskr_storage_read_errors_total",
		"Reads of the partition's log that failed with an I/O error (not corruption).")
	mState    = promtext.NewGauge("ratatoskr_partition_state", "The partition's state: 0 online, 1 read-only, 2 offline.")
	mReadOnly = promtext.NewGauge("ratatoskr_partitions_read_only",
		"Partitions that refuse publishes until restart, after a failed fsync or an uncuttable failed write.")
	mOffline = promtext.NewGauge("ratatoskr_partitions_offline",
		"Partitions whose log could not be opened at start; they serve nothing until a restart opens them.")
)

func (e *Engine) writePartitionMetrics(w io.Writer) {
	var ps []partitionSample
	for _, t := range e.topics.list() {
		for _, p := range t.Parts {
			ps = append(ps, partitionSample{labels: `{topic=` + promtext.Label(t.Name) + `,partition="` + strconv.Itoa(int(p.ID)) + `"}`,
				c: p.Counters(), subs: p.Subscribers(), log: p.Log.Stats()})
		}
	}
	family := func(f promtext.Family, value func(p *partitionSample) uint64) {
		f.WriteHeader(w)
		for i := range ps {
			f.WriteSample(w, ps[i].labels, strconv.FormatUint(value(&ps[i]), 10))
		}
	}
	family(mPublished, func(p *partitionSample) uint64 { return p.c.PublishedMessages })
	family(mPublishedBytes, func(p *partitionSample) uint64 { return p.c.PublishedBytes })
	family(mDelivered, func(p *partitionSample) uint64 { return p.c.DeliveredMessages })
	family(mDeliveredBytes, func(p *partitionSample) uint64 { return p.c.DeliveredBytes })
	family(mSubscribers, func(p *partitionSample) uint64 { return uint64(p.subs) })
	family(mEndOffset, func(p *partitionSample) uint64 { return uint64(max(p.log.End, 0)) })
	family(mStorageBytes, func(p *partitionSample) uint64 { return uint64(max(p.log.Bytes, 0)) })
	family(mSegments, func(p *partitionSample) uint64 { return uint64(max(p.log.Segments, 0)) })
	family(mCorruptRanges, func(p *partitionSample) uint64 { return uint64(len(p.log.Corrupt)) })
	family(mCorruptOffsets, func(p *partitionSample) uint64 {
		var n int64
		for _, r := range p.log.Corrupt {
			n += r.To - r.From
		}
		return uint64(max(n, 0))
	})
	family(mReadErrors, func(p *partitionSample) uint64 { return p.log.ReadErrors })
	family(mState, func(p *partitionSample) uint64 {
		state, _ := topic.PartitionState(&p.log)
		return uint64(state)
	})
	writeStateCounts(w, ps)
}

// writeStateCounts writes how many partitions are read-only and offline,
// the two numbers worth an alert.
func writeStateCounts(w io.Writer, ps []partitionSample) {
	var counts [3]uint64
	for i := range ps {
		if state, _ := topic.PartitionState(&ps[i].log); int(state) < len(counts) {
			counts[state]++
		}
	}
	mReadOnly.WriteUint(w, counts[wire.PartitionReadOnly])
	mOffline.WriteUint(w, counts[wire.PartitionOffline])
}

// The per-plugin families, labelled by plugin.
var (
	mPluginDelivered = promtext.NewCounter("ratatoskr_plugin_events_delivered_total", "Events handed to the plugin's handler.")
	mPluginDropped   = promtext.NewCounter("ratatoskr_plugin_events_dropped_total",
		"Events dropped for the plugin because its queue was full.")
	mPluginPanics = promtext.NewCounter("ratatoskr_plugin_panics_total", "Calls of the plugin's handler that panicked (recovered).")
	mPluginErrors = promtext.NewCounter("ratatoskr_plugin_errors_total", "Calls of the plugin's handler or flush that returned an error.")
	mPluginQueue  = promtext.NewGauge("ratatoskr_plugin_queue_length", "Events waiting in the plugin's queue.")
)

// writePluginMetrics writes each plugin's event counters and queue length.
func (e *Engine) writePluginMetrics(w io.Writer) {
	stats := e.PluginStats()
	family := func(f promtext.Family, value func(ps *PluginStats) uint64) {
		f.WriteHeader(w)
		for i := range stats {
			f.WriteSample(w, `{plugin=`+promtext.Label(stats[i].Name)+`}`, strconv.FormatUint(value(&stats[i]), 10))
		}
	}
	family(mPluginDelivered, func(ps *PluginStats) uint64 { return ps.Delivered })
	family(mPluginDropped, func(ps *PluginStats) uint64 { return ps.Dropped })
	family(mPluginPanics, func(ps *PluginStats) uint64 { return ps.Panics })
	family(mPluginErrors, func(ps *PluginStats) uint64 { return ps.Errors })
	family(mPluginQueue, func(ps *PluginStats) uint64 { return uint64(max(ps.Queued, 0)) })
}

// The consumer-group families.
var (
	mGroupMembers = promtext.NewGauge("ratatoskr_consumer_group_members", "Members of the consumer group.")
	mGroupLag     = promtext.NewGauge("ratatoskr_consumer_lag_messages",
		"Messages from the group's committed offset to the partition's end; only partitions with a commit.")
)

// writeGroupMetrics writes each group's members and, per partition with a
// committed offset, its lag. Both families are gathered first: each must
// be written in one run.
func (e *Engine) writeGroupMetrics(w io.Writer) {
	var members, lag [][2]string // labels, value
	for _, g := range e.groups.List() {
		gl := `group=` + promtext.Label(g.Group) + `,topic=` + promtext.Label(g.Topic)
		members = append(members, [2]string{`{` + gl + `}`, strconv.Itoa(int(g.Members))})
		info, err := e.groups.Describe(g.Group)
		if err != nil {
			continue // removed since list
		}
		for _, p := range info.Partitions {
			if p.Lag >= 0 {
				lag = append(lag, [2]string{`{` + gl + `,partition="` + strconv.Itoa(int(p.Partition)) + `"}`,
					strconv.FormatInt(p.Lag, 10)})
			}
		}
	}
	writeSeries(w, mGroupMembers, members)
	writeSeries(w, mGroupLag, lag)
}

// writeSeries writes f's header and its samples, each labels and value.
func writeSeries(w io.Writer, f promtext.Family, samples [][2]string) {
	f.WriteHeader(w)
	for _, s := range samples {
		f.WriteSample(w, s[0], s[1])
	}
}

// errCodeName is a wire error code as a label value: "unknown_topic".
func errCodeName(c int) string {
	return strings.ReplaceAll(wire.Code(c).String(), " ", "_")
}

// The authentication and tenant families.
var (
	mAuth = promtext.NewCounter("ratatoskr_auth_total",
		"Authentications on the native protocol, by outcome (ok, failed) and, for failures, counted against the source address.")
	mDenied = promtext.NewCounter("ratatoskr_auth_denied_total",
		"Operations refused with NOT_AUTHORIZED (a principal's rules or role).")
	mTenantConns    = promtext.NewGauge("ratatoskr_tenant_connections", "A tenant's open connections.")
	mTenantPubBytes = promtext.NewCounter("ratatoskr_tenant_published_bytes_total",
		"Record batch bytes a tenant's connections published.")
	mTenantPubMsgs = promtext.NewCounter("ratatoskr_tenant_published_messages_total",
		"Messages a tenant's connections published.")
	mTenantStored = promtext.NewGauge("ratatoskr_tenant_stored_bytes",
		"Bytes a tenant's partitions hold, as measured every second plus what was published since (its storage quota's measure).")
	mTenantThrottled = promtext.NewCounter("ratatoskr_tenant_throttled_seconds_total",
		"Seconds a tenant's connections were held back for being over a publish rate quota.")
	mTenantDelivered = promtext.NewCounter("ratatoskr_tenant_delivered_bytes_total",
		"Bytes written to a tenant's connections (deliveries and answers).")
	mTenantDeliveryThrottled = promtext.NewCounter("ratatoskr_tenant_delivery_throttled_seconds_total",
		"Seconds a tenant's connections' deliveries were held back for being over its delivery rate quota.")
	mTenantRefused = promtext.NewCounter("ratatoskr_tenant_quota_refusals_total",
		"Requests a tenant's quota refused with QUOTA_EXCEEDED, by quota (connections, storage); topic and partition refusals are in ratatoskr_errors_total.")
)

func (e *Engine) writeSecurityMetrics(w io.Writer) {
	ok, failed, denied := e.srv.AuthCounters()
	mAuth.WriteHeader(w)
	mAuth.WriteSample(w, `{outcome="ok"}`, strconv.FormatUint(ok, 10))
	mAuth.WriteSample(w, `{outcome="failed"}`, strconv.FormatUint(failed, 10))
	mDenied.WriteUint(w, denied)
	ts := e.srv.Tenants()
	slices.SortFunc(ts, func(a, b server.TenantCounters) int { return strings.Compare(a.Tenant, b.Tenant) })
	family := func(f promtext.Family, value func(c *server.TenantCounters) string) {
		f.WriteHeader(w)
		for i := range ts {
			f.WriteSample(w, `{tenant=`+promtext.Label(ts[i].Tenant)+`}`, value(&ts[i]))
		}
	}
	family(mTenantConns, func(c *server.TenantCounters) string { return strconv.FormatInt(max(c.Connections, 0), 10) })
	family(mTenantPubBytes, func(c *server.TenantCounters) string { return strconv.FormatUint(c.PublishedBytes, 10) })
	family(mTenantPubMsgs, func(c *server.TenantCounters) string { return strconv.FormatUint(c.PublishedMsgs, 10) })
	family(mTenantStored, func(c *server.TenantCounters) string { return strconv.FormatInt(max(c.StoredBytes, 0), 10) })
	family(mTenantThrottled, func(c *server.TenantCounters) string {
		return strconv.FormatFloat(c.Throttled.Seconds(), 'g', -1, 64)
	})
	family(mTenantDelivered, func(c *server.TenantCounters) string { return strconv.FormatUint(c.DeliveredBytes, 10) })
	family(mTenantDeliveryThrottled, func(c *server.TenantCounters) string {
		return strconv.FormatFloat(c.DeliveryThrottled.Seconds(), 'g', -1, 64)
	})
	mTenantRefused.WriteHeader(w)
	for i := range ts {
		for _, q := range []string{"connections", "storage"} {
			mTenantRefused.WriteSample(w, `{tenant=`+promtext.Label(ts[i].Tenant)+`,quota="`+q+`"}`,
				strconv.FormatUint(ts[i].Refused[q], 10))
		}
	}
}
