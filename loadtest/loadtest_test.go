package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

func startBroker(t *testing.T) string {
	t.Helper()
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	require.NoError(t, err)
	require.NoError(t, e.Start(context.Background()))
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
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
