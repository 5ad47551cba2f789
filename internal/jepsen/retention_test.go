package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
)

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512KiB": 512 << 10, "2MiB": 2 << 20, "1GiB": 1 << 30} {
		n, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, n, in)
	}
	for _, bad := range []string{"", "MiB", "-1", "2 MiB", "1.5MiB", "2mb", "99999999GiB"} {
		_, err := parseSize(bad)
		require.ErrorContains(t, err, "is not a size", bad)
	}
	require.Equal(t, "2MiB", formatSize(2<<20))
	require.Equal(t, "1536KiB", formatSize(1536<<10))
	require.Equal(t, "1000", formatSize(1000))
	require.Equal(t, "0", formatSize(0))
	var s size
	require.NoError(t, s.Set("3MiB"))
	require.Equal(t, "3MiB", s.String())
}

// TestBrokerArgs: a segment holds a frame, and a frame a message; the
// broker refuses settings that break this (engine.Config.Validate), and
// the runner refuses sizes the broker would.
func TestBrokerArgs(t *testing.T) {
	require.Equal(t, []string{"--segment-bytes", "1048576", "--max-frame-bytes", "1048576", "--max-message-bytes", "524288",
		"--catchup-bytes", "262144"}, brokerArgs(1<<20, 256<<10))
	require.Equal(t, []string{"--segment-bytes", "134217728", "--max-frame-bytes", "4194304", "--max-message-bytes", "1048576",
		"--catchup-bytes", "0"}, brokerArgs(128<<20, 0))
	require.NoError(t, checkSizes(config{segmentBytes: 1 << 20, retentionBytes: 2 << 20}))
	require.NoError(t, checkSizes(config{segmentBytes: 1 << 20}))
	require.ErrorContains(t, checkSizes(config{segmentBytes: 512 << 10}), "-segment-bytes 512KiB")
	require.ErrorContains(t, checkSizes(config{segmentBytes: 1 << 20, retentionBytes: -1}), "-retention-bytes")
}

// TestSnapshotCounts: the admin API's counters start again with each
// process; the runner keeps each process's highest and sums them, and
// counts the installs the nodes' logs record over all their starts.
func TestSnapshotCounts(t *testing.T) {
	tt := &test{dir: t.TempDir(), bin: "ratatoskr", cfg: config{topic: "t", retentionBytes: 2 << 20, segmentBytes: 1 << 20},
		snaps: map[snapKey]snapCount{}}
	for range 2 {
		_, err := tt.addNode("")
		require.NoError(t, err)
	}
	report := func(installed, sent int) httpapi.Cluster {
		return httpapi.Cluster{Partitions: []httpapi.ClusterPart{
			{Topic: "t", Partition: 0, Local: &httpapi.RaftGroup{Snapshots: installed, SnapshotsSent: sent, Fetched: int64(installed) << 20}},
			{Topic: "t", Partition: 1, Local: &httpapi.RaftGroup{Snapshots: 1}},
			{Topic: "other", Partition: 0, Local: &httpapi.RaftGroup{Snapshots: 5, SnapshotsSent: 5}},
			{Topic: "t", Partition: 2}, // no replica here
		}}
	}
	first, second := time.Unix(100, 0), time.Unix(200, 0)
	n1, n2 := tt.node(1), tt.node(2)
	tt.noteSnapshots(n1, first, report(1, 0))
	tt.noteSnapshots(n1, first, report(2, 3))
	tt.noteSnapshots(n1, first, report(0, 0)) // a late answer: never lowers what was seen
	tt.noteSnapshots(n1, second, report(1, 0))
	tt.noteSnapshots(n2, first, report(0, 4))
	installed, sent, fetched, byNode := tt.snapshotsSeen()
	require.Equal(t, 3+2+1, installed)
	require.Equal(t, 3+4, sent)
	require.Equal(t, int64(2+1)<<20, fetched)
	require.Equal(t, map[int]int{1: 5, 2: 1}, byNode)

	line := `level=INFO msg="installed a snapshot" group=1000 index=7` + "\n"
	fetchedLine := `level=INFO msg="catch-up: fetched the leader's batches; installing the snapshot" group=1000` + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(n1.dir, "node.log"),
		[]byte(strings.Repeat(line, 3)+"---- jepsen: start\n"+fetchedLine+line), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(n2.dir, "node.log"), []byte("nothing\n"), 0o644))
	require.Equal(t, 4, tt.snapshotsLogged("installed a snapshot"))
	require.Equal(t, 1, tt.snapshotsLogged("catch-up: fetched the leader's batches"))

	h := &checker.History{Reads: []checker.Read{{Partition: 0, Start: 10, Final: true}, {Partition: 0, Start: 12, Final: true},
		{Partition: 1, Start: 7, Final: true}, {Partition: 1, Start: 0}}}
	lines := tt.retentionSummary(h, checker.Stats{AckRetained: 9, Jumps: 2})
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "2MiB per partition, 1MiB segments; final reads start at offsets p0 10..12, p1 7..7; 9 ack checks")
	require.Contains(t, lines[0], "jumped to the start 2 times")
	require.Contains(t, lines[1], "4 installed (the nodes' logs), 1 after fetching batches whole; "+
		"the admin API showed 6 installed (node 1: 5, node 2: 1), 7 sent, 3MiB fetched")
	tt.cfg.retentionBytes = 0
	lines = tt.retentionSummary(h, checker.Stats{})
	require.Contains(t, lines[0], "none")
	require.Contains(t, lines[1], "4 installed")
}
