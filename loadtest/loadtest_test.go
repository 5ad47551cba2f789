package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"
	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

func startBroker(t *testing.T) string {
	t.Helper()
	e := brokertest.Start(t, nil)
	return e.Addr().String()
}

func TestRunCountsAndVerifies(t *testing.T) {
	addr := startBroker(t)
	cfg := DefaultConfig()
	cfg.Server, cfg.Count, cfg.Producers, cfg.Subscribers, cfg.Partitions = addr, 30_000, 3, 2, 2
	cfg.HistFile = filepath.Join(t.TempDir(), "latency.hgrm")
	cfg.LatencyLog = filepath.Join(t.TempDir(), "latency.tsv")
	var progress bytes.Buffer
	res, err := Run(context.Background(), cfg, &progress)
	require.NoError(t, err)
	require.Equal(t, uint64(30_000), res.Published)
	require.Equal(t, uint64(60_000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	require.Greater(t, res.PublishRate, 0.0)
	require.Greater(t, res.DeliverRate, 0.0)
	require.Greater(t, res.LatencyUS.P50, 0.0)
	require.GreaterOrEqual(t, res.LatencyUS.Max, res.LatencyUS.P99)
	require.Greater(t, res.ToolCPU, 0.0)

	hist, err := os.ReadFile(cfg.HistFile)
	require.NoError(t, err)
	require.Contains(t, string(hist), "Value\tPercentile\tTotalCount\t1/(1-Percentile)")
	require.Contains(t, string(hist), "#[Mean")

	log, err := os.ReadFile(cfg.LatencyLog)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	require.Len(t, lines, 3+30_000, "three comment lines, then a line per message of the first subscriber")
	require.Equal(t, "# 30000 messages logged, 0 more received and not logged", lines[1])
	require.Contains(t, lines[2], "# run started ")
	for _, l := range lines[3:] {
		sent, lat, ok := strings.Cut(l, "\t")
		require.True(t, ok, l)
		s, err1 := strconv.ParseInt(sent, 10, 64)
		d, err2 := strconv.ParseInt(lat, 10, 64)
		require.NoError(t, errors.Join(err1, err2), l)
		require.GreaterOrEqual(t, s, int64(0), "sent after the run's start")
		require.Positive(t, d)
	}

	var line bytes.Buffer
	require.NoError(t, WriteJSON(&line, res))
	var m map[string]any
	require.NoError(t, json.Unmarshal(line.Bytes(), &m))
	for _, k := range []string{"publish_rate", "deliver_rate", "mb_per_sec", "lost", "duplicated", "reordered"} {
		require.Contains(t, m, k)
	}
	lat := m["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p999", "p9999", "max"} {
		require.Contains(t, lat, k)
	}
	var table bytes.Buffer
	require.NoError(t, WriteSummary(&table, res))
	require.Contains(t, table.String(), "lost / duplicated / reordered")
}

func TestPacedRunHoldsTheRate(t *testing.T) {
	addr := startBroker(t)
	cfg := DefaultConfig()
	cfg.Server, cfg.Rate, cfg.Duration = addr, 2000, 1500*time.Millisecond
	var progress bytes.Buffer
	res, err := Run(context.Background(), cfg, &progress)
	require.NoError(t, err)
	require.InDelta(t, 3000, float64(res.Published), 150, "1.5 s at 2000 msg/s")
	require.Greater(t, res.MeanBurst, 0.0)
	require.Contains(t, progress.String(), "publish", "a progress line a second")
}

// TestPacedBurstsArriveWhole: at a high rate each wake-up sends a burst
// (more than the 256 messages of one PublishBatchAsync call when the
// producer fell behind), and every message arrives once, in order.
func TestPacedBurstsArriveWhole(t *testing.T) {
	addr := startBroker(t)
	cfg := DefaultConfig()
	cfg.Server, cfg.Rate, cfg.Count, cfg.PaceQuantum = addr, 400_000, 80_000, 2*time.Millisecond
	res, err := Run(context.Background(), cfg, io.Discard)
	require.NoError(t, err)
	require.Equal(t, uint64(80_000), res.Published)
	require.Equal(t, uint64(80_000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	require.Greater(t, res.MeanBurst, 256.0, "2 ms sleeps at 400k msg/s: bursts of about 800")
}

func TestValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Size, cfg.Producers, cfg.Count, cfg.Duration = 10, 0, 0, 0
	err := cfg.Validate()
	require.Error(t, err)
	for _, want := range []string{"size", "producers", "count/duration"} {
		require.Contains(t, err.Error(), want)
	}
}

// TestVerificationCountsProblems feeds a subscriber deliveries with a gap,
// a duplicate and a late (reordered) message.
func TestVerificationCountsProblems(t *testing.T) {
	s := newSubscriber(1)
	payload := make([]byte, MinSize)
	deliver := func(seq uint64) {
		putHeader(payload, 0, seq, now())
		s.handle(&client.Delivery{Message: client.Message{Value: payload}})
	}
	for _, seq := range []uint64{0, 1, 3, 3, 2, 5} {
		deliver(seq)
	}
	s.handle(&client.Delivery{Message: client.Message{Value: []byte("short")}})
	tr := s.seqs[0]
	require.Equal(t, uint64(1), tr.dup)
	require.Equal(t, uint64(1), tr.reord)
	require.Equal(t, uint64(5), s.unique.Load())
	require.Equal(t, uint64(1), s.malformed)

	r := &run{cfg: Config{Size: MinSize, Producers: 1, Subscribers: 1}, subs: []*subscriber{s},
		prods: []*producer{{}}}
	r.prods[0].sent.Store(7)
	res := r.result(0, int64(time.Second))
	require.Equal(t, uint64(2), res.Lost, "sequences 4 and 6 never arrived")
	require.Equal(t, uint64(1), res.Duplicated)
	require.Equal(t, uint64(1), res.Reordered)
}

func TestFailsOnUnreachableBroker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Server, cfg.Count = "127.0.0.1:1", 10
	_, err := Run(context.Background(), cfg, nil)
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "dial"), err.Error())
}

// TestExistingTopicMustMatch: a run that asks for storage, fsync or
// partitions refuses a topic that has others, naming each difference, and
// with Recreate measures a topic made as asked.
func TestExistingTopicMustMatch(t *testing.T) {
	addr := startBroker(t)
	ctx := context.Background()
	admin, err := client.Dial(ctx, addr)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	require.NoError(t, admin.CreateTopic(ctx, "mem", client.TopicConfig{Partitions: 1, Storage: "memory"}))
	require.NoError(t, admin.CreateTopic(ctx, "disk", client.TopicConfig{Partitions: 2, Storage: "disk", Fsync: "interval=1s"}))

	run := func(topic string, edit func(*Config)) (*Result, error) {
		cfg := DefaultConfig()
		cfg.Server, cfg.Topic, cfg.Count = addr, topic, 2000
		edit(&cfg)
		return Run(ctx, cfg, io.Discard)
	}
	cases := []struct {
		topic string
		edit  func(*Config)
		diffs []string
	}{
		{"mem", func(c *Config) { c.Durable = true }, []string{"storage memory (asked disk)"}},
		{"mem", func(c *Config) { c.Partitions = 3 }, []string{"partitions 1 (asked 3)"}},
		{"disk", func(c *Config) { c.Durable = true }, []string{"fsync interval=1s (asked always)"}},
		{"disk", func(c *Config) { c.Durable, c.Fsync, c.Partitions = true, "never", 4 },
			[]string{"fsync interval=1s (asked never)", "partitions 2 (asked 4)"}},
		{"disk", func(c *Config) { c.Partitions = 2 }, []string{"storage disk (asked memory)"}},
	}
	for _, tc := range cases {
		res, err := run(tc.topic, tc.edit)
		require.ErrorIs(t, err, ErrTopicMismatch, tc.diffs)
		require.Nil(t, res)
		for _, d := range tc.diffs {
			require.Contains(t, err.Error(), d)
		}
		require.Contains(t, err.Error(), "--recreate")
	}

	// The same settings spelled another way are the same topic.
	res, err := run("disk", func(c *Config) { c.Durable, c.Fsync, c.Partitions = true, "interval=1000ms", 2 })
	require.NoError(t, err)
	require.True(t, res.Durable)
	require.Equal(t, "interval=1s", res.Fsync)

	res, err = run("mem", func(c *Config) { c.Durable, c.Fsync, c.Partitions, c.Recreate = true, "never", 2, true })
	require.NoError(t, err)
	require.Equal(t, uint64(2000), res.Delivered)
	require.True(t, res.Durable)
	require.Equal(t, "never", res.Fsync)
	require.Equal(t, 2, res.Partitions)
	info, err := admin.DescribeTopic(ctx, "mem")
	require.NoError(t, err)
	require.Equal(t, "disk", info.Config["storage"])
	require.Equal(t, "never", info.Config["fsync"])
	require.Len(t, info.Partitions, 2)
}

// TestExistingTopicUsedAsItIs: without storage flags the run takes the
// topic it finds, and reports that topic, not the defaults.
func TestExistingTopicUsedAsItIs(t *testing.T) {
	addr := startBroker(t)
	ctx := context.Background()
	admin, err := client.Dial(ctx, addr)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	require.NoError(t, admin.CreateTopic(ctx, "d", client.TopicConfig{Partitions: 3, Storage: "disk", Fsync: "never"}))
	cfg := DefaultConfig()
	cfg.Server, cfg.Topic, cfg.Count, cfg.Producers = addr, "d", 3000, 3
	var progress bytes.Buffer
	res, err := Run(ctx, cfg, &progress)
	require.NoError(t, err)
	require.Equal(t, "d", res.Topic)
	require.True(t, res.Durable)
	require.Equal(t, "never", res.Fsync)
	require.Equal(t, 3, res.Partitions)
	require.Contains(t, progress.String(), "using the existing topic d: disk, fsync never, 3 partitions")
	var table bytes.Buffer
	require.NoError(t, WriteSummary(&table, res))
	require.Contains(t, table.String(), "d: disk, fsync never, 3 partitions")

	cfg.Fsync = "never"
	require.ErrorContains(t, cfg.Validate(), "applies to a durable topic only")
}

func TestFormatMicros(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0µs", 12.4: "12µs", 850: "850µs", 999.4: "999µs", 999.6: "1.0ms", 3_240: "3.2ms",
		45_300: "45.3ms", 99_960: "100ms", 250_000: "250ms", 999_600: "1.0s", 1_400_000: "1.4s",
		120_000_000: "120s",
	} {
		require.Equal(t, want, FormatMicros(in), "%v µs", in)
	}
}

// TestSummaryUnits: the table gives every latency in the unit that fits,
// the producer's lateness beside the latency for a paced run, and the
// JSON keeps plain numbers in microseconds.
func TestSummaryUnits(t *testing.T) {
	res := &Result{Topic: "t", Producers: 1, Subscribers: 1, Partitions: 1, Size: 128, TargetRate: 100_000,
		LatencyUS:          Latency{P50: 85, P90: 130, P99: 3_200, P999: 12_000, P9999: 90_000, Max: 1_400_000},
		ProducerLatenessUS: &Latency{P50: 21, P90: 40, P99: 850, P999: 2_000, P9999: 3_000, Max: 4_000}}
	var table bytes.Buffer
	require.NoError(t, WriteSummary(&table, res))
	require.Contains(t, table.String(), "85µs / 130µs / 3.2ms\n")
	require.Contains(t, table.String(), "12.0ms / 90.0ms / 1.4s\n")
	require.Contains(t, table.String(), "producer lateness p50 / p99 / max")
	require.Contains(t, table.String(), "21µs / 850µs / 4.0ms\n")

	var line bytes.Buffer
	require.NoError(t, WriteJSON(&line, res))
	var m struct {
		Latency map[string]float64 `json:"latency_us"`
		Late    map[string]float64 `json:"producer_lateness_us"`
	}
	require.NoError(t, json.Unmarshal(line.Bytes(), &m))
	require.Equal(t, 3_200.0, m.Latency["p99"])
	require.Equal(t, 850.0, m.Late["p99"])

	res.ProducerLatenessUS = nil // an unpaced run
	table.Reset()
	require.NoError(t, WriteSummary(&table, res))
	require.NotContains(t, table.String(), "lateness")
	line.Reset()
	require.NoError(t, WriteJSON(&line, res))
	require.NotContains(t, line.String(), "lateness")
}

// TestLatenessCountsFromIntendedTime: a paced producer whose schedule
// started 50 ms before it did is late by that much for its first
// messages, and those messages carry their intended time, not the time
// they went out.
func TestLatenessCountsFromIntendedTime(t *testing.T) {
	addr := startBroker(t)
	ctx := context.Background()
	c, err := client.Dial(ctx, addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.CreateTopic(ctx, "late", client.TopicConfig{Partitions: 1}))
	s := newSubscriber(1)
	sub, err := c.Subscribe(ctx, "late", s.handle, client.DispatchInline())
	require.NoError(t, err)

	p := &producer{c: singleConn{c}, topic: "late", count: 200, rate: 10_000, quantum: int64(20 * time.Microsecond),
		size: MinSize, late: newTimings()}
	const behind = 50 * time.Millisecond
	p.run(ctx, now()-int64(behind))
	require.NoError(t, p.err)
	require.Eventually(t, func() bool { return s.received.Load() == 200 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, sub.Unsubscribe(ctx))
	<-sub.Done()

	require.Equal(t, int64(200), p.late.all.TotalCount())
	require.GreaterOrEqual(t, p.late.all.Max(), int64(behind)*99/100, "the first message was due 50 ms before the run")
	require.GreaterOrEqual(t, s.lat.all.Max(), p.late.all.Max()*99/100,
		"latency counts from the intended time, so it holds the lateness")
}

// TestIntendedTimes: evenly spaced, message n is due at n/rate; with a
// burst interval, every message of an interval is due at its start.
func TestIntendedTimes(t *testing.T) {
	even := &producer{rate: 100_000}
	bursts := &producer{rate: 100_000, window: int64(time.Millisecond)}
	slow := &producer{rate: 500, window: int64(time.Millisecond)} // one message per 2 ms: no bursts
	for _, c := range []struct {
		p    *producer
		seq  uint64
		want time.Duration
	}{
		{even, 0, 0}, {even, 1, 10 * time.Microsecond}, {even, 150, 1500 * time.Microsecond},
		{bursts, 0, 0}, {bursts, 99, 0}, {bursts, 100, time.Millisecond}, {bursts, 250, 2 * time.Millisecond},
		{slow, 1, 2 * time.Millisecond}, {slow, 3, 6 * time.Millisecond},
	} {
		require.Equal(t, int64(c.want)+7, c.p.intended(7, c.seq), "seq %d window %d", c.seq, c.p.window)
	}
}

// TestPacedBurstSchedule: with a burst interval each wake-up sends the
// interval's share of the rate at once.
func TestPacedBurstSchedule(t *testing.T) {
	addr := startBroker(t)
	cfg := DefaultConfig()
	cfg.Server, cfg.Rate, cfg.Count, cfg.BurstInterval = addr, 20_000, 20_000, 2*time.Millisecond
	res, err := Run(context.Background(), cfg, io.Discard)
	require.NoError(t, err)
	require.Equal(t, uint64(20_000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	require.GreaterOrEqual(t, res.MeanBurst, 39.0, "40 messages due every 2 ms; a late wake-up sends more")
	require.NotNil(t, res.ProducerLatenessUS)
	require.Equal(t, 2000.0, res.BurstIntervalUS)
	var table bytes.Buffer
	require.NoError(t, WriteSummary(&table, res))
	require.Contains(t, table.String(), "20.0k msg/s in bursts every 2.0ms")
}

// TestCompressedJSONRun: producers compress text-like payloads with each
// codec; every message arrives once, in order, and the log holds the
// batches compressed (well under the payload bytes).
func TestCompressedJSONRun(t *testing.T) {
	addr := startBroker(t)
	const count, size = 20_000, 200
	for _, codec := range []client.Codec{client.LZ4, client.Zstd, client.Snappy} {
		cfg := DefaultConfig()
		cfg.Server, cfg.Count, cfg.Size, cfg.Topic = addr, count, size, "json-"+codec.String()
		cfg.Payload, cfg.Compression, cfg.Linger = PayloadJSON, codec, time.Millisecond
		res, err := Run(context.Background(), cfg, io.Discard)
		require.NoError(t, err)
		require.Equal(t, uint64(count), res.Delivered)
		require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
		require.Equal(t, codec.String(), res.Compression)
		var table bytes.Buffer
		require.NoError(t, WriteSummary(&table, res))
		require.Contains(t, table.String(), "200 B json, "+codec.String()+" compressed")

		c, err := client.Dial(context.Background(), addr)
		require.NoError(t, err)
		info, err := c.DescribeTopic(context.Background(), cfg.Topic)
		_ = c.Close()
		require.NoError(t, err)
		require.Less(t, info.Partitions[0].Bytes, int64(count*size/2), "%s: the log holds %d bytes", codec, info.Partitions[0].Bytes)
	}
}

// TestJSONPayloadsVary: the JSON filler differs between variants and
// keeps the header's room.
func TestJSONPayloadsVary(t *testing.T) {
	a, b := make([]byte, 300), make([]byte, 300)
	fillPayload(a, PayloadJSON, 1)
	fillPayload(b, PayloadJSON, 2)
	require.NotEqual(t, a[MinSize:], b[MinSize:])
	require.Equal(t, make([]byte, MinSize), a[:MinSize])
	require.Equal(t, byte('{'), a[MinSize])
	cfg := DefaultConfig()
	cfg.Payload = "xml"
	require.ErrorContains(t, cfg.Validate(), "payload")
}

// TestReplayReadsOnlyItsOwnRun: a replay on a topic that holds an earlier
// run's messages reads back this run's only, each once: durable with plain
// subscribers and with a group, and in memory.
func TestReplayReadsOnlyItsOwnRun(t *testing.T) {
	addr := startBroker(t)
	for i, group := range []string{"", "replayers", ""} {
		cfg := DefaultConfig()
		cfg.Server, cfg.Topic, cfg.Durable, cfg.Replay = addr, fmt.Sprint("replayed-", i), i < 2, true
		cfg.Count, cfg.Producers, cfg.Partitions, cfg.Subscribers, cfg.Group = 20_000, 2, 2, 2, group
		for run := range 2 {
			res, err := Run(context.Background(), cfg, io.Discard)
			require.NoError(t, err, "run %d", run)
			require.Equal(t, uint64(20_000), res.Published)
			require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed,
				"run %d, group %q: %+v", run, group, res)
		}
	}
}

// TestRedisTopicRun: --storage redis runs against a topic kept in the
// broker's Redis, live and as a replay, and reports its storage.
func TestRedisTopicRun(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := brokertest.Start(t, func(c *engine.Config) { c.RedisURL = srv.URL("", "") })
	for _, replay := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.Server, cfg.Topic, cfg.Storage, cfg.Replay = e.Addr().String(), fmt.Sprint("in-redis-", replay), "redis", replay
		cfg.Count, cfg.Producers, cfg.Partitions, cfg.Subscribers = 20_000, 2, 2, 1
		res, err := Run(context.Background(), cfg, io.Discard)
		require.NoError(t, err)
		require.Equal(t, uint64(20_000), res.Published)
		require.Equal(t, uint64(20_000), res.Delivered)
		require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed, "%+v", res)
		require.Equal(t, "redis", res.Storage)
		require.True(t, res.Durable)
	}
	cfg := DefaultConfig()
	cfg.Server, cfg.Storage, cfg.Durable, cfg.Count = e.Addr().String(), "redis", true, 1
	_, err := Run(context.Background(), cfg, io.Discard)
	require.ErrorContains(t, err, "contradicts --durable")
}
