package httpapi

import (
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Health: /healthz says the process is alive; /readyz says whether it
// should get traffic: recovery is done and the native listener is up (and
// has not stopped since), the data directory is writable, and the broker
// is not draining. A broker that serves with some partitions in trouble
// (offline, read-only, corruption found, reads failing) is still ready,
// since every other partition serves, but says "degraded" and why.
// /api/v1/health is the dashboard's fuller report.

// readyz answers 200 "ready", 200 "degraded: " and the partitions'
// problems, or 503 with the reasons the broker should get no traffic.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if reasons := s.b.NotReady(true); len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(strings.Join(reasons, "; ") + "\n"))
		return
	}
	problems := append(dependencyProblems(s.b.Dependencies()), capProblems(partitionProblems(s.b.Topics()))...)
	if len(problems) > 0 {
		_, _ = w.Write([]byte("degraded: " + strings.Join(problems, "; ") + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Dependency is a server the broker depends on: the Redis server that
// keeps the logs of storage=redis topics. While it is down only those
// topics fail (their publishes get STORAGE_UNAVAILABLE), so the broker
// says it is degraded, not unready.
type Dependency struct {
	Name        string `json:"name"` // "redis"
	Addr        string `json:"addr"`
	Up          bool   `json:"up"`
	Error       string `json:"error,omitempty"`       // why it is down
	Persistence string `json:"persistence,omitempty"` // Redis: what its settings make of an acknowledged message
}

// dependencyProblems says which dependencies are down.
func dependencyProblems(deps []Dependency) []string {
	var out []string
	for _, d := range deps {
		if !d.Up {
			out = append(out, "dependency "+d.Name+" at "+d.Addr+" is down: "+d.Error)
		}
	}
	return out
}

// partitionProblems lists the problems of every partition (appendProblems).
func partitionProblems(topics []Topic) []string {
	var problems []string
	for _, t := range topics {
		for i := range t.Parts {
			problems = appendProblems(problems, t.Name, &t.Parts[i])
		}
	}
	return problems
}

// appendProblems appends what is wrong with partition p of topic: offline,
// read-only, corruption found (at recovery or by a read), reads that
// failed.
func appendProblems(out []string, topic string, p *Partition) []string {
	name := "partition " + topic + "/" + strconv.Itoa(int(p.ID))
	st := &p.Log
	if p.State != wire.PartitionOnline {
		out = append(out, name+" "+p.State.String()+": "+p.Reason)
	}
	if n := len(st.Corrupt); n > 0 {
		out = append(out, fmt.Sprintf("%s: %d corrupt range(s) found, the first %s", name, n, st.Corrupt[0]))
	}
	if st.ReadErrors > 0 {
		out = append(out, fmt.Sprintf("%s: %d read(s) failed with I/O errors", name, st.ReadErrors))
	}
	return out
}

// maxListedProblems bounds the partition problems a report lists: a disk
// gone bad can affect thousands of partitions, and a probe's answer or the
// dashboard's list should stay readable. The rest are counted.
const maxListedProblems = 20

func capProblems(problems []string) []string {
	if len(problems) <= maxListedProblems {
		return problems
	}
	more := len(problems) - maxListedProblems
	return append(problems[:maxListedProblems:maxListedProblems],
		fmt.Sprintf("and %d more partition problem(s)", more))
}

// Health statuses.
const (
	HealthHealthy  = "healthy"
	HealthDegraded = "degraded" // serving, with a problem worth a look
	// HealthUnhealthy: not ready: recovering, the native listener down,
	// the disk not writable, draining.
	HealthUnhealthy = "unhealthy"
)

// HealthReport is the body of GET /api/v1/health.
type HealthReport struct {
	Status        string          `json:"status"`
	Reasons       []string        `json:"reasons"`
	UptimeSeconds float64         `json:"uptime_seconds"`
	Broker        BrokerHealth    `json:"broker"`
	Topics        []TopicHealth   `json:"topics"`
	Dependencies  []Dependency    `json:"dependencies"`
	Cluster       ClusterHealth   `json:"cluster"`
	Resources     ResourcesHealth `json:"resources"`
}

// BrokerHealth is the broker-wide part of a HealthReport. Rates are per
// second over the last metrics-history interval.
type BrokerHealth struct {
	Alive            bool    `json:"alive"`
	TopicCount       int     `json:"topic_count"`
	TotalSubscribers int64   `json:"total_subscribers"`
	Connections      int64   `json:"connections"`
	MessageRate      float64 `json:"message_rate"`
	ErrorRate        float64 `json:"error_rate"`
}

// TopicHealth is one topic in a HealthReport: its subscriptions, the
// messages and bytes it holds, its publish rate, and its partitions that
// are not online or had storage trouble.
type TopicHealth struct {
	Name        string  `json:"name"`
	Partitions  int     `json:"partitions"`
	Subscribers int64   `json:"subscribers"`
	Messages    int64   `json:"messages"`
	Bytes       int64   `json:"bytes"`
	MessageRate float64 `json:"message_rate"`
	ReadOnly    int     `json:"read_only_partitions"`
	Offline     int     `json:"offline_partitions"`
	// Problems lists the partitions that are not online, or where
	// corruption was found or reads failed; the others are online and well.
	Problems []PartitionHealth `json:"partition_problems"`
}

// PartitionHealth is a partition with a problem, in a TopicHealth.
type PartitionHealth struct {
	Partition     int32  `json:"partition"`
	State         string `json:"state"`            // online, read-only or offline
	Reason        string `json:"reason,omitempty"` // why it is not online
	CorruptRanges int    `json:"corrupt_ranges"`
	ReadErrors    uint64 `json:"read_errors"`
}

// ClusterHealth describes the cluster; a broker runs standalone for now.
type ClusterHealth struct {
	Mode  string `json:"mode"`
	Nodes int    `json:"nodes"`
}

// ResourcesHealth is the process's and the data directory's resources.
type ResourcesHealth struct {
	MemoryBytes    uint64  `json:"memory_bytes"`     // heap in use
	MemorySysBytes uint64  `json:"memory_sys_bytes"` // obtained from the OS
	Goroutines     int     `json:"goroutines"`
	GOMAXPROCS     int     `json:"gomaxprocs"`
	InboxDepths    []int   `json:"inbox_depths"` // per shard
	DiskPath       string  `json:"disk_path"`
	DiskUsedBytes  uint64  `json:"disk_used_bytes"` // of the file system holding DiskPath
	DiskFreeBytes  uint64  `json:"disk_free_bytes"`
	DiskUsageRatio float64 `json:"disk_usage_ratio"`
}

// Thresholds past which the broker reports itself degraded.
const (
	degradedInboxRatio = 0.5 // of a shard's inbox capacity
	degradedDiskRatio  = 0.9 // of the data file system
	// Errors count when above this many per second and above
	// degradedErrorShare of the message rate.
	degradedErrorRate  = 1.0
	degradedErrorShare = 0.01
)

// Health reports the broker's health, as GET /api/v1/health serves it.
func (s *Server) Health() HealthReport {
	h := HealthReport{Reasons: []string{}, UptimeSeconds: s.b.Uptime().Seconds(),
		Cluster: ClusterHealth{Mode: "standalone", Nodes: 1}, Topics: []TopicHealth{}}
	last, _ := s.cfg.History.latest()
	topics := s.b.Topics()
	h.Broker = BrokerHealth{Alive: !s.b.Draining(), TopicCount: len(topics),
		Connections: s.b.ConnectionCount(), MessageRate: last.MessageRate, ErrorRate: last.ErrorRate}
	var problems []string
	for _, t := range topics {
		th := TopicHealth{Name: t.Name, Partitions: len(t.Parts), Subscribers: t.Subscriptions,
			MessageRate: s.cfg.History.topicRate(t.Name), Problems: []PartitionHealth{}}
		for i := range t.Parts {
			p := &t.Parts[i]
			th.Messages += p.Log.End - p.Log.Start
			th.Bytes += p.Log.Bytes
			th.note(p)
			problems = appendProblems(problems, t.Name, p)
		}
		h.Broker.TotalSubscribers += th.Subscribers
		h.Topics = append(h.Topics, th)
	}
	shards := s.b.Shards()
	h.Resources = s.resources(shards)
	if reasons := s.b.NotReady(true); len(reasons) > 0 {
		h.Status, h.Reasons = HealthUnhealthy, reasons
		return h
	}
	h.Dependencies = s.b.Dependencies()
	if h.Dependencies == nil {
		h.Dependencies = []Dependency{}
	}
	h.Reasons = degradedReasons(&h, shards, append(dependencyProblems(h.Dependencies), capProblems(problems)...))
	h.Status = HealthHealthy
	if len(h.Reasons) > 0 {
		h.Status = HealthDegraded
	}
	return h
}

// note counts partition p's state and lists it when it has a problem.
func (th *TopicHealth) note(p *Partition) {
	st := &p.Log
	switch p.State {
	case wire.PartitionReadOnly:
		th.ReadOnly++
	case wire.PartitionOffline:
		th.Offline++
	}
	if p.State != wire.PartitionOnline || len(st.Corrupt) > 0 || st.ReadErrors > 0 {
		th.Problems = append(th.Problems, PartitionHealth{Partition: p.ID, State: p.State.String(), Reason: p.Reason,
			CorruptRanges: len(st.Corrupt), ReadErrors: st.ReadErrors})
	}
}

// degradedReasons lists what is wrong with a broker that is serving: the
// partitions' problems, then the broker's.
func degradedReasons(h *HealthReport, shards []Shard, partitions []string) []string {
	reasons := append([]string{}, partitions...)
	for i, s := range shards {
		if float64(s.InboxDepth) > degradedInboxRatio*float64(s.InboxCap) {
			reasons = append(reasons, fmt.Sprintf("shard %d inbox is %d of %d full", i, s.InboxDepth, s.InboxCap))
		}
	}
	if r := h.Broker.ErrorRate; r > degradedErrorRate && r > degradedErrorShare*h.Broker.MessageRate {
		reasons = append(reasons, fmt.Sprintf("errors at %.1f/s", r))
	}
	if h.Resources.DiskUsageRatio > degradedDiskRatio {
		reasons = append(reasons, fmt.Sprintf("data file system %.0f%% full", 100*h.Resources.DiskUsageRatio))
	}
	return reasons
}

func (s *Server) resources(shards []Shard) ResourcesHealth {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := ResourcesHealth{MemoryBytes: ms.HeapAlloc, MemorySysBytes: ms.Sys, Goroutines: runtime.NumGoroutine(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), InboxDepths: make([]int, len(shards)), DiskPath: s.cfg.DataDir}
	for i, sh := range shards {
		r.InboxDepths[i] = sh.InboxDepth
	}
	var st unix.Statfs_t
	if unix.Statfs(s.cfg.DataDir, &st) == nil {
		bsize := uint64(st.Bsize)
		r.DiskFreeBytes = st.Bavail * bsize
		r.DiskUsedBytes = (st.Blocks - st.Bfree) * bsize
		if total := r.DiskUsedBytes + r.DiskFreeBytes; total > 0 {
			r.DiskUsageRatio = float64(r.DiskUsedBytes) / float64(total)
		}
	}
	return r
}

// apiHealth serves GET /api/v1/health: 200 with the report whatever the
// status, so a dashboard can show why.
func (s *Server) apiHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Health())
}
