package engine

import (
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Metrics (docs/METRICS.md lists them all).
//
// Nothing is recorded per message. Counters live where they are bumped,
// once per batch: the shards' and partitions' atomics, the engine's
// connection and error counters. A scrape reads them and writes the text
// format itself. The histograms are per shard, in the engine's own
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
		batch: set.NewPrometheusHistogramExt("ratatoskr_publish_batch_messages"+l, batchBuckets),
		ack:   set.NewPrometheusHistogramExt("ratatoskr_publish_ack_seconds"+l, latencyBuckets),
		fsync: set.NewPrometheusHistogramExt("ratatoskr_fsync_seconds"+l, latencyBuckets),
	}
}

// PublishBatch implements shard.Observer.
func (m *shardMetrics) PublishBatch(n int) { m.batch.Update(float64(n)) }

// Acked implements shard.Observer.
func (m *shardMetrics) Acked(d time.Duration) { m.ack.Update(d.Seconds()) }

// Fsynced implements shard.Observer.
func (m *shardMetrics) Fsynced(d time.Duration) { m.fsync.Update(d.Seconds()) }

// writeMetrics writes every metric; httpapi serves them at GET /metrics. Each family's lines are written
// together, as the text format requires.
func (e *Engine) writeMetrics(w io.Writer) {
	e.metricSet.WritePrometheus(w)
	e.writeBrokerMetrics(w)
	e.srv.WriteMetrics(w)
	e.writeShardMetrics(w)
	e.writePartitionMetrics(w)
	e.writePluginMetrics(w)
	if e.isReady() { // groups are loaded
		e.writeGroupMetrics(w)
	}
	metrics.WriteProcessMetrics(w)
}

func (e *Engine) writeBrokerMetrics(w io.Writer) {
	st := e.Stats()
	c := e.srv.Counters()
	ready := uint64(0)
	if len(e.notReadyReasons(false)) == 0 {
		ready = 1
	}
	metrics.WriteGaugeUint64(w, "ratatoskr_ready", ready)
	metrics.WriteGaugeFloat64(w, "ratatoskr_uptime_seconds", e.uptime().Seconds())
	metrics.WriteGaugeUint64(w, "ratatoskr_connections", uint64(max(st.Connections, 0)))
	metrics.WriteCounterUint64(w, "ratatoskr_connections_accepted_total", st.Accepted)
	for why := outbox.SlowLimit; why < outbox.NumSlowReasons; why++ {
		metrics.WriteCounterUint64(w, `ratatoskr_slow_consumer_disconnects_total{reason="`+why.String()+`"}`,
			c.SlowCuts[why])
	}
	var detached uint64
	for _, s := range e.shards {
		detached += s.Detached()
	}
	metrics.WriteCounterUint64(w, "ratatoskr_subscriptions_detached_total", detached)
	metrics.WriteCounterUint64(w, "ratatoskr_subscriptions_resumed_total", c.Resumed)
	metrics.WriteGaugeUint64(w, "ratatoskr_outbound_bytes", uint64(max(c.OutboundBytes, 0)))
	metrics.WriteGaugeUint64(w, "ratatoskr_outbound_bytes_limit", uint64(c.OutboundLimit))
	metrics.WriteCounterUint64(w, "ratatoskr_direct_writes_total", st.DirectWrites)
	metrics.WriteCounterUint64(w, "ratatoskr_direct_writes_short_total", st.DirectShort)
	metrics.WriteGaugeUint64(w, "ratatoskr_topics", uint64(st.Topics))
	metrics.WriteGaugeUint64(w, "ratatoskr_fetches_waiting", uint64(max(c.FetchesWaiting, 0)))
	metrics.WriteCounterUint64(w, "ratatoskr_fetches_refused_total", c.FetchesRefused)
	if e.reclaim != nil {
		metrics.WriteCounterUint64(w, "ratatoskr_storage_reclaimed_bytes_total", uint64(e.reclaim.Freed()))
	}
	fc := e.topics.files.Stats()
	metrics.WriteGaugeUint64(w, "ratatoskr_storage_open_files", uint64(fc.Open))
	metrics.WriteGaugeUint64(w, "ratatoskr_storage_open_files_limit", uint64(fc.Capacity))
	metrics.WriteCounterUint64(w, "ratatoskr_storage_file_opens_total", fc.Opens)
	metrics.WriteCounterUint64(w, "ratatoskr_storage_file_evictions_total", fc.Evictions)
	metrics.WriteCounterUint64(w, "ratatoskr_storage_file_eviction_syncs_total", fc.EvictionSyncs)
	for code, n := range c.Errors {
		if n > 0 {
			metrics.WriteCounterUint64(w, `ratatoskr_errors_total{code=`+label(errCodeName(code))+`}`, n)
		}
	}
}

func (e *Engine) writeShardMetrics(w io.Writer) {
	family := func(name string, value func(s *driver.Driver) string) {
		for _, s := range e.shards {
			writeLine(w, name+`{shard="`+strconv.Itoa(s.ID())+`"}`, value(s))
		}
	}
	family("ratatoskr_shard_inbox_depth", func(s *driver.Driver) string { return strconv.Itoa(s.InboxLen()) })
	family("ratatoskr_shard_inbox_capacity", func(s *driver.Driver) string { return strconv.Itoa(s.InboxCap()) })
	family("ratatoskr_shard_busy_seconds_total", func(s *driver.Driver) string {
		return strconv.FormatFloat(s.BusyTime().Seconds(), 'g', -1, 64)
	})
	family("ratatoskr_shard_published_batches_total", func(s *driver.Driver) string {
		b, _ := s.Stats()
		return strconv.FormatUint(b, 10)
	})
}

// partitionSample is what a scrape reads of one partition.
type partitionSample struct {
	labels string // {topic="…",partition="…"}
	c      shard.Counters
	subs   int
	log    storage.LogStats
}

func (e *Engine) writePartitionMetrics(w io.Writer) {
	var ps []partitionSample
	for _, t := range e.topics.list() {
		for _, p := range t.Parts {
			ps = append(ps, partitionSample{labels: `{topic=` + label(t.Name) + `,partition="` + strconv.Itoa(int(p.ID)) + `"}`,
				c: p.Counters(), subs: p.Subscribers(), log: p.Log.Stats()})
		}
	}
	family := func(name string, value func(p *partitionSample) uint64) {
		for i := range ps {
			writeLine(w, name+ps[i].labels, strconv.FormatUint(value(&ps[i]), 10))
		}
	}
	family("ratatoskr_published_messages_total", func(p *partitionSample) uint64 { return p.c.PublishedMessages })
	family("ratatoskr_published_bytes_total", func(p *partitionSample) uint64 { return p.c.PublishedBytes })
	family("ratatoskr_delivered_messages_total", func(p *partitionSample) uint64 { return p.c.DeliveredMessages })
	family("ratatoskr_delivered_bytes_total", func(p *partitionSample) uint64 { return p.c.DeliveredBytes })
	family("ratatoskr_subscribers", func(p *partitionSample) uint64 { return uint64(p.subs) })
	family("ratatoskr_partition_end_offset", func(p *partitionSample) uint64 { return uint64(max(p.log.End, 0)) })
	family("ratatoskr_storage_bytes", func(p *partitionSample) uint64 { return uint64(max(p.log.Bytes, 0)) })
	family("ratatoskr_storage_segments", func(p *partitionSample) uint64 { return uint64(max(p.log.Segments, 0)) })
	family("ratatoskr_storage_corrupt_ranges", func(p *partitionSample) uint64 { return uint64(len(p.log.Corrupt)) })
	family("ratatoskr_storage_corrupt_messages", func(p *partitionSample) uint64 {
		var n int64
		for _, r := range p.log.Corrupt {
			n += r.To - r.From
		}
		return uint64(max(n, 0))
	})
	family("ratatoskr_storage_read_errors_total", func(p *partitionSample) uint64 { return p.log.ReadErrors })
	family("ratatoskr_partition_state", func(p *partitionSample) uint64 {
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
	metrics.WriteGaugeUint64(w, "ratatoskr_partitions_read_only", counts[wire.PartitionReadOnly])
	metrics.WriteGaugeUint64(w, "ratatoskr_partitions_offline", counts[wire.PartitionOffline])
}

// writePluginMetrics writes each plugin's event counters and queue length.
func (e *Engine) writePluginMetrics(w io.Writer) {
	stats := e.PluginStats()
	family := func(name string, value func(ps *PluginStats) uint64) {
		for i := range stats {
			writeLine(w, name+`{plugin=`+label(stats[i].Name)+`}`, strconv.FormatUint(value(&stats[i]), 10))
		}
	}
	family("ratatoskr_plugin_events_delivered_total", func(ps *PluginStats) uint64 { return ps.Delivered })
	family("ratatoskr_plugin_events_dropped_total", func(ps *PluginStats) uint64 { return ps.Dropped })
	family("ratatoskr_plugin_panics_total", func(ps *PluginStats) uint64 { return ps.Panics })
	family("ratatoskr_plugin_errors_total", func(ps *PluginStats) uint64 { return ps.Errors })
	family("ratatoskr_plugin_queue_length", func(ps *PluginStats) uint64 { return uint64(max(ps.Queued, 0)) })
}

// writeGroupMetrics writes each group's members and, per partition with a
// committed offset, its lag.
func (e *Engine) writeGroupMetrics(w io.Writer) {
	var members, lag []string
	for _, g := range e.groups.List() {
		gl := `group=` + label(g.Group) + `,topic=` + label(g.Topic)
		members = append(members, `ratatoskr_consumer_group_members{`+gl+`} `+strconv.Itoa(int(g.Members)))
		info, err := e.groups.Describe(g.Group)
		if err != nil {
			continue // removed since list
		}
		for _, p := range info.Partitions {
			if p.Lag >= 0 {
				lag = append(lag, `ratatoskr_consumer_lag_messages{`+gl+`,partition="`+
					strconv.Itoa(int(p.Partition))+`"} `+strconv.FormatInt(p.Lag, 10))
			}
		}
	}
	for _, l := range append(members, lag...) {
		_, _ = io.WriteString(w, l+"\n")
	}
}

// errCodeName is a wire error code as a label value: "unknown_topic".
func errCodeName(c int) string {
	return strings.ReplaceAll(wire.Code(c).String(), " ", "_")
}

func writeLine(w io.Writer, series, value string) {
	_, _ = io.WriteString(w, series+" "+value+"\n")
}

// label quotes a label value for the text format.
func label(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return `"` + v + `"`
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}
