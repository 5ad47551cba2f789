package httpapi

import (
	"cmp"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The metrics history: a collector goroutine samples the broker's counters
// every engine Config.HistoryInterval and keeps Config.HistoryRetention of
// them in a ring (the seed's collector: every 5 s for an hour), so the
// dashboard can draw the recent past without a Prometheus server. Each
// sample carries the rates since the one before it. The sampler is the
// broker's (engine reads its own counters); the ring and the rates are
// here.

// HistorySample is one sample of the metrics history. Counts are
// cumulative over the topics that exist when it is taken; rates are per
// second since the previous sample (0 in the first), and never negative
// (a deleted topic takes its counts away).
type HistorySample struct {
	Time              time.Time              `json:"time"`
	PublishedMessages uint64                 `json:"published_messages"`
	PublishedBytes    uint64                 `json:"published_bytes"`
	DeliveredMessages uint64                 `json:"delivered_messages"`
	DeliveredBytes    uint64                 `json:"delivered_bytes"`
	Connections       int64                  `json:"connections"`
	Subscribers       int64                  `json:"subscribers"`
	Errors            uint64                 `json:"errors"`
	MemoryBytes       uint64                 `json:"memory_bytes"`
	Goroutines        int                    `json:"goroutines"`
	Topics            map[string]TopicSample `json:"topics"` // the historyTopics busiest topics

	MessageRate       float64 `json:"message_rate"`        // published messages/s
	ByteRate          float64 `json:"byte_rate"`           // published bytes/s
	DeliveredRate     float64 `json:"delivered_rate"`      // delivered messages/s
	DeliveredByteRate float64 `json:"delivered_byte_rate"` // delivered bytes/s
	ErrorRate         float64 `json:"error_rate"`          // errors/s
	IntervalSeconds   float64 `json:"interval_seconds"`    // since the previous sample
}

// TopicSample is one topic in a HistorySample.
type TopicSample struct {
	PublishedMessages uint64  `json:"published_messages"`
	MessageRate       float64 `json:"message_rate"`
}

// HistoryReport is the body of GET /api/v1/metrics/history.
type HistoryReport struct {
	IntervalSeconds float64         `json:"interval_seconds"`
	Samples         []HistorySample `json:"samples"`
}

// historyTopics is how many topics each sample keeps, the busiest by
// message rate: an hour of samples of every topic of a broker at its topic
// limit would hold tens of megabytes and answer with more.
const historyTopics = 20

// History is the ring of samples and the goroutine that fills it.
type History struct {
	sample   func() HistorySample // reads the broker's counters
	interval time.Duration

	mu          sync.Mutex
	topicCounts map[string]uint64  // every topic's count at the newest sample
	topicRates  map[string]float64 // and its rate then
	ring        []HistorySample
	next        int // where the next sample goes
	n           int // samples held
	started     bool

	stop chan struct{}
	done chan struct{}
}

// NewHistory returns a history that keeps retention of samples taken
// every interval by calling sample, once Start runs it.
func NewHistory(interval, retention time.Duration, sample func() HistorySample) *History {
	size := max(int(retention/interval), 1)
	return &History{sample: sample, interval: interval, ring: make([]HistorySample, size),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start takes a first sample and runs the collector.
func (h *History) Start() {
	h.mu.Lock()
	h.started = true
	h.mu.Unlock()
	h.add(h.sample())
	go h.run()
}

// Close stops the collector and waits for it; safe if it never started.
func (h *History) Close() {
	h.mu.Lock()
	started := h.started
	h.started = false
	h.mu.Unlock()
	if started {
		close(h.stop)
		<-h.done
	}
}

// Done is closed once a started collector has stopped.
func (h *History) Done() <-chan struct{} { return h.done }

func (h *History) run() {
	defer close(h.done)
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			h.add(h.sample())
		case <-h.stop:
			return
		}
	}
}

// add stores s with its rates against the newest sample held, keeping
// the busiest topics of it.
func (h *History) add(s HistorySample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rates := make(map[string]float64, len(s.Topics))
	if h.n > 0 {
		prev := &h.ring[(h.next+len(h.ring)-1)%len(h.ring)]
		s.withRates(prev)
		for name, t := range s.Topics {
			// A topic new since the previous sample starts from 0; one
			// deleted and made again may count less: no negative rate.
			if old := h.topicCounts[name]; t.PublishedMessages >= old && s.IntervalSeconds > 0 {
				t.MessageRate = float64(t.PublishedMessages-old) / s.IntervalSeconds
				s.Topics[name] = t
			}
		}
	}
	h.topicCounts = make(map[string]uint64, len(s.Topics))
	for name, t := range s.Topics {
		h.topicCounts[name] = t.PublishedMessages
		rates[name] = t.MessageRate
	}
	h.topicRates = rates
	s.Topics = busiest(s.Topics, historyTopics)
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
}

// samples returns the samples held, oldest first.
func (h *History) samples() []HistorySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HistorySample, 0, h.n)
	for i := range h.n {
		out = append(out, h.ring[(h.next-h.n+i+len(h.ring))%len(h.ring)])
	}
	return out
}

// topicRate is a topic's message rate at the newest sample.
func (h *History) topicRate(name string) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.topicRates[name]
}

// busiest keeps the n topics of ts with the highest rates (ties: by name).
func busiest(ts map[string]TopicSample, n int) map[string]TopicSample {
	if len(ts) <= n {
		return ts
	}
	names := slices.Collect(maps.Keys(ts))
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(ts[b].MessageRate, ts[a].MessageRate); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	out := make(map[string]TopicSample, n)
	for _, name := range names[:n] {
		out[name] = ts[name]
	}
	return out
}

// latest returns the newest sample, and false when there is none.
func (h *History) latest() (HistorySample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return HistorySample{}, false
	}
	return h.ring[(h.next+len(h.ring)-1)%len(h.ring)], true
}

// withRates fills s's rates from the counts of prev, taken before it.
func (s *HistorySample) withRates(prev *HistorySample) {
	dt := s.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	rate := func(cur, old uint64) float64 {
		if cur < old {
			return 0
		}
		return float64(cur-old) / dt
	}
	s.IntervalSeconds = dt
	s.MessageRate = rate(s.PublishedMessages, prev.PublishedMessages)
	s.ByteRate = rate(s.PublishedBytes, prev.PublishedBytes)
	s.DeliveredRate = rate(s.DeliveredMessages, prev.DeliveredMessages)
	s.DeliveredByteRate = rate(s.DeliveredBytes, prev.DeliveredBytes)
	s.ErrorRate = rate(s.Errors, prev.Errors)
}

// Report is the metrics history, oldest sample first, as GET
// /api/v1/metrics/history serves it.
func (h *History) Report() HistoryReport {
	return HistoryReport{IntervalSeconds: h.interval.Seconds(), Samples: h.samples()}
}

// apiHistory serves GET /api/v1/metrics/history.
func (s *Server) apiHistory(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.History.Report())
}
