package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
)

// Retention under faults: the workload topic keeps about -retention-bytes
// per partition, in segments of -segment-bytes, so every replica removes
// its oldest segments many times during a run, and a node that was down
// or cut off while its leader did comes back behind the leader's start
// and installs a Raft snapshot. The runner counts those (the nodes'
// admin API and logs), and the checker takes each read from its log's
// start.

// size is a flag of bytes: an integer, or one with a KiB, MiB or GiB
// suffix.
type size int64

func (s *size) String() string { return formatSize(int64(*s)) }

func (s *size) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = size(n)
	return nil
}

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}}

func parseSize(v string) (int64, error) {
	num, shift := v, uint(0)
	for _, u := range sizeUnits {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			num, shift = s, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > 1<<40>>shift {
		return 0, fmt.Errorf("%q is not a size such as 1048576, 512KiB or 2MiB", v)
	}
	return n << shift, nil
}

func formatSize(n int64) string {
	for _, u := range sizeUnits {
		if n > 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// brokerArgs are the serve flags the retention settings need: segments of
// segmentBytes, and frames (so publish batches) and messages small enough
// for them (a segment must hold a frame); and the catch-up window.
func brokerArgs(segmentBytes, catchUpBytes int64) []string {
	frame := min(4<<20, segmentBytes)
	return []string{"--segment-bytes", strconv.FormatInt(segmentBytes, 10),
		"--max-frame-bytes", strconv.FormatInt(frame, 10), "--max-message-bytes", strconv.FormatInt(min(1<<20, frame/2), 10),
		"--catchup-bytes", strconv.FormatInt(catchUpBytes, 10)}
}

// checkSizes refuses settings the broker would refuse, before any node
// starts.
func checkSizes(c config) error {
	if c.segmentBytes < 1<<20 || c.segmentBytes > 1<<32-1 {
		return fmt.Errorf("-segment-bytes %s: must be 1MiB..4GiB", formatSize(c.segmentBytes))
	}
	if c.retentionBytes < 0 {
		return errors.New("-retention-bytes must not be negative (0: keep forever)")
	}
	if c.catchUpBytes < 0 {
		return errors.New("-catchup-bytes must not be negative (0: Raft entries only)")
	}
	return nil
}

// snapKey is one run of one node's process: the admin API's counters
// start again at each.
type snapKey struct {
	node    int
	started time.Time
}

// snapCount is what one process reported, at most, for the workload
// topic's groups: snapshots installed and sent, bytes fetched whole.
type snapCount struct {
	installed, sent int
	fetched         int64
}

// noteSnapshots keeps the snapshot counters of node n's report r, taken
// from its process that started at started.
func (t *test) noteSnapshots(n *node, started time.Time, r httpapi.Cluster) {
	var c snapCount
	for _, cp := range r.Partitions {
		if cp.Topic == t.cfg.topic && cp.Local != nil {
			c.installed += cp.Local.Snapshots
			c.sent += cp.Local.SnapshotsSent
			c.fetched += cp.Local.Fetched
		}
	}
	k := snapKey{n.id, started}
	t.mu.Lock()
	old := t.snaps[k]
	t.snaps[k] = snapCount{max(old.installed, c.installed), max(old.sent, c.sent), max(old.fetched, c.fetched)}
	t.mu.Unlock()
}

// snapshotsSeen sums the counters over every process: what the admin API
// showed (a process killed before it was asked again took its last
// installs with it; the nodes' logs have them all).
func (t *test) snapshotsSeen() (installed, sent int, fetched int64, byNode map[int]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byNode = map[int]int{}
	for k, c := range t.snaps {
		installed += c.installed
		sent += c.sent
		fetched += c.fetched
		byNode[k.node] += c.installed
	}
	return installed, sent, fetched, byNode
}

// snapshotsLogged counts the snapshots every node's log says it
// installed, over all its starts (cluster.Host logs each).
func (t *test) snapshotsLogged(line string) int {
	total := 0
	for _, n := range t.nodes {
		data, err := os.ReadFile(filepath.Join(n.dir, "node.log"))
		if err == nil {
			total += strings.Count(string(data), line)
		}
	}
	return total
}

// retentionSummary says what retention did: where the final reads of
// each partition start, how many (ack, read) pairs it excused, the
// consumers' jumps, and the snapshots installed.
func (t *test) retentionSummary(h *checker.History, s checker.Stats) []string {
	installed, sent, fetched, byNode := t.snapshotsSeen()
	nodes := make([]string, 0, len(byNode))
	for _, id := range slices.Sorted(maps.Keys(byNode)) {
		nodes = append(nodes, fmt.Sprintf("node %d: %d", id, byNode[id]))
	}
	snaps := fmt.Sprintf("snapshots         %d installed (the nodes' logs), %d after fetching batches whole; "+
		"the admin API showed %d installed (%s), %d sent, %s fetched (-catchup-bytes %s)",
		t.snapshotsLogged("installed a snapshot"), t.snapshotsLogged("catch-up: fetched the leader's batches"),
		installed, strings.Join(nodes, ", "), sent, formatSize(fetched), formatSize(t.cfg.catchUpBytes))
	if t.cfg.retentionBytes == 0 {
		return []string{"retention         none (-retention-bytes 0): every log starts at 0", snaps}
	}
	starts := map[int32][]int64{}
	for _, r := range h.Reads {
		if r.Final {
			starts[r.Partition] = append(starts[r.Partition], r.Start)
		}
	}
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(starts)) {
		parts = append(parts, fmt.Sprintf("p%d %d..%d", p, slices.Min(starts[p]), slices.Max(starts[p])))
	}
	return []string{
		fmt.Sprintf("retention         %s per partition, %s segments; final reads start at offsets %s; %d ack checks "+
			"skipped below a read's start; consumers (the laggards) jumped to the start %d times", formatSize(t.cfg.retentionBytes),
			formatSize(t.cfg.segmentBytes), strings.Join(parts, ", "), s.AckRetained, s.Jumps),
		snaps,
	}
}
