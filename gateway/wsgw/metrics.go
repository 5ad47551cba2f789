package wsgw

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
)

// The WebSocket front end's own counters, beside the gateway's (requests,
// publishes, deliveries, open sockets: gateway.Metrics, via="ws").
var (
	mSlowConsumers = promtext.NewCounter("ratatoskr_gateway_ws_slow_consumers_total",
		"WebSockets cut because a write to the client stayed blocked for the write timeout.")
	mClosed = promtext.NewCounter("ratatoskr_gateway_ws_closed_total",
		"WebSockets that ended, by the close code the broker sent (1000 also when the client closed first).")
	mFrames = promtext.NewCounter("ratatoskr_gateway_ws_delivery_frames_total",
		"WebSocket messages of deliveries written (one per broker batch).")
)

// wsMetrics are a handler's counters.
type wsMetrics struct {
	slow, frames atomic.Uint64
	mu           sync.Mutex
	closed       map[websocket.StatusCode]uint64
}

func (m *wsMetrics) closedWith(code websocket.StatusCode) {
	m.mu.Lock()
	if m.closed == nil {
		m.closed = map[websocket.StatusCode]uint64{}
	}
	m.closed[code]++
	m.mu.Unlock()
}

// WritePrometheus writes the handler's own counters in the Prometheus
// text format, each family announced with its HELP and TYPE lines; the
// broker's /metrics includes them.
func (h *Handler) WritePrometheus(w io.Writer) {
	m := &h.metrics
	mSlowConsumers.WriteUint(w, m.slow.Load())
	mFrames.WriteUint(w, m.frames.Load())
	mClosed.WriteHeader(w)
	m.mu.Lock()
	defer m.mu.Unlock()
	for code, n := range m.closed {
		mClosed.WriteSample(w, `{code="`+strconv.Itoa(int(code))+`"}`, strconv.FormatUint(n, 10))
	}
}
