package engine

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Health: /healthz says the process is alive; /readyz says whether it
// should get traffic: recovery is done and the native listener is up (and
// has not stopped since), the data directory is writable, and the broker
// is not draining. A broker that serves with some partitions in trouble
// (offline, read-only, corruption found, reads failing) is still ready,
// since every other partition serves, but says "degraded" and why.
// /api/v1/health is the dashboard's fuller report.

// diskProbeTTL is how long a disk probe's answer is reused, so that
// frequent readiness checks cost one small write and fsync every so often.
const diskProbeTTL = 2 * time.Second

// probeFile is the file the disk probe creates and removes in DataDir.
const probeFile = ".ready-probe"

// diskProbe caches whether the data directory is writable.
type diskProbe struct {
	mu  sync.Mutex
	at  time.Time // of the last probe; zero: never
	err error
}

// check returns the cached answer, or probes when it is older than the TTL.
func (d *diskProbe) check(fsys vfs.FS, dir string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at.IsZero() || time.Since(d.at) >= diskProbeTTL {
		d.err = probeDisk(fsys, dir)
		d.at = time.Now()
	}
	return d.err
}

// probeDisk creates, writes, fsyncs and removes a file in dir.
func probeDisk(fsys vfs.FS, dir string) error {
	name := dir + "/" + probeFile
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("ratatoskr readiness probe\n"))
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close(), fsys.Remove(name))
}

// setNotReady records why the broker is not ready yet; "" makes it ready.
func (e *Engine) setNotReady(reason string) {
	if reason == "" {
		e.notReady.Store(nil)
		return
	}
	e.notReady.Store(&reason)
}

// isReady reports whether Start has finished: recovery done, listener up.
func (e *Engine) isReady() bool { return e.notReady.Load() == nil }

// notReadyReasons lists why the broker should not get traffic; none when
// it is ready. probe also checks that the data directory is writable.
func (e *Engine) notReadyReasons(probe bool) []string {
	if e.draining.Load() {
		return []string{"shutting down"}
	}
	if r := e.notReady.Load(); r != nil {
		return []string{*r}
	}
	if why := e.listenerProblem(); why != "" {
		return []string{"native listener down: " + why}
	}
	if probe {
		if err := e.disk.check(e.cfg.FS, e.cfg.DataDir); err != nil {
			return []string{"data directory not writable: " + err.Error()}
		}
	}
	return nil
}

// readyz answers 200 "ready", 200 "degraded: " and the partitions'
// problems, or 503 with the reasons the broker should get no traffic.
func (e *Engine) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if reasons := e.notReadyReasons(true); len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(strings.Join(reasons, "; ") + "\n"))
		return
	}
	if problems := e.partitionProblems(); len(problems) > 0 {
		_, _ = w.Write([]byte("degraded: " + strings.Join(capProblems(problems), "; ") + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// partitionProblems lists the problems of every partition (appendProblems).
func (e *Engine) partitionProblems() []string {
	var problems []string
	for _, t := range e.topics.list() {
		for _, p := range t.Parts {
			st := p.Log.Stats()
			problems = appendProblems(problems, t.Name, p.ID, &st)
		}
	}
	return problems
}

// appendProblems appends what is wrong with partition id of topic, whose
// log reported st: offline, read-only, corruption found (at recovery or by
// a read), reads that failed.
func appendProblems(out []string, topic string, id int32, st *storage.LogStats) []string {
	name := "partition " + topic + "/" + strconv.Itoa(int(id))
	if state, why := partitionState(st); state != wire.PartitionOnline {
		out = append(out, name+" "+state.String()+": "+why)
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

func (e *Engine) uptime() time.Duration {
	if e.startedAt.IsZero() {
		return 0
	}
	return time.Since(e.startedAt)
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
func (e *Engine) Health() HealthReport {
	h := HealthReport{Reasons: []string{}, UptimeSeconds: e.uptime().Seconds(),
		Cluster: ClusterHealth{Mode: "standalone", Nodes: 1}, Topics: []TopicHealth{}}
	last, _ := e.history.latest()
	h.Broker = BrokerHealth{Alive: !e.draining.Load(), TopicCount: e.topics.count(),
		Connections: e.connections.Load(), MessageRate: last.MessageRate, ErrorRate: last.ErrorRate}
	var problems []string
	for _, t := range e.topics.list() {
		th := TopicHealth{Name: t.Name, Partitions: len(t.Parts), Subscribers: int64(t.subscriptions.Load()),
			MessageRate: e.history.topicRate(t.Name), Problems: []PartitionHealth{}}
		for _, p := range t.Parts {
			st := p.Log.Stats()
			th.Messages += st.End - st.Start
			th.Bytes += st.Bytes
			th.note(p.ID, &st)
			problems = appendProblems(problems, t.Name, p.ID, &st)
		}
		h.Broker.TotalSubscribers += th.Subscribers
		h.Topics = append(h.Topics, th)
	}
	h.Resources = e.resources()
	if reasons := e.notReadyReasons(true); len(reasons) > 0 {
		h.Status, h.Reasons = HealthUnhealthy, reasons
		return h
	}
	h.Reasons = e.degradedReasons(&h, capProblems(problems))
	h.Status = HealthHealthy
	if len(h.Reasons) > 0 {
		h.Status = HealthDegraded
	}
	return h
}

// note counts partition id's state and lists it when it has a problem.
func (th *TopicHealth) note(id int32, st *storage.LogStats) {
	state, why := partitionState(st)
	switch state {
	case wire.PartitionReadOnly:
		th.ReadOnly++
	case wire.PartitionOffline:
		th.Offline++
	}
	if state != wire.PartitionOnline || len(st.Corrupt) > 0 || st.ReadErrors > 0 {
		th.Problems = append(th.Problems, PartitionHealth{Partition: id, State: state.String(), Reason: why,
			CorruptRanges: len(st.Corrupt), ReadErrors: st.ReadErrors})
	}
}

// degradedReasons lists what is wrong with a broker that is serving: the
// partitions' problems, then the broker's.
func (e *Engine) degradedReasons(h *HealthReport, partitions []string) []string {
	reasons := append([]string{}, partitions...)
	for i, s := range e.shards {
		if float64(s.InboxLen()) > degradedInboxRatio*float64(s.InboxCap()) {
			reasons = append(reasons, fmt.Sprintf("shard %d inbox is %d of %d full", i, s.InboxLen(), s.InboxCap()))
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

func (e *Engine) resources() ResourcesHealth {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := ResourcesHealth{MemoryBytes: ms.HeapAlloc, MemorySysBytes: ms.Sys, Goroutines: runtime.NumGoroutine(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), InboxDepths: make([]int, len(e.shards)), DiskPath: e.cfg.DataDir}
	for i, s := range e.shards {
		r.InboxDepths[i] = s.InboxLen()
	}
	var st unix.Statfs_t
	if unix.Statfs(e.cfg.DataDir, &st) == nil {
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
func (e *Engine) apiHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, e.Health())
}
