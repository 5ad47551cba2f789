package gateway

import (
	"github.com/VictoriaMetrics/metrics"
)

// Metrics are the gateways' counters, by front end ("grpc", "http",
// "ws"), in the broker's /metrics (docs/METRICS.md). What the sessions do
// (publishes, deliveries, errors by code, slow consumers) is counted by
// the broker as for any session; these count what only a front end sees.
type Metrics struct {
	set *metrics.Set
}

func newMetrics(set *metrics.Set) *Metrics {
	if set == nil {
		set = metrics.NewSet()
	}
	return &Metrics{set: set}
}

// Set is where the counters are, for a /metrics handler.
func (m *Metrics) Set() *metrics.Set { return m.set }

func (m *Metrics) counter(name, via string) *metrics.Counter {
	return m.set.GetOrCreateCounter(name + `{via="` + via + `"}`)
}

func (m *Metrics) sessionOpened(via string) {
	m.counter("ratatoskr_gateway_sessions_opened_total", via).Inc()
}
func (m *Metrics) sessionFailed(via string) {
	m.counter("ratatoskr_gateway_sessions_failed_total", via).Inc()
}

// Request counts a request (an RPC, an HTTP request, a WebSocket
// command) and, when err is not nil, its failure by kind.
func (m *Metrics) Request(via string, err error) {
	m.counter("ratatoskr_gateway_requests_total", via).Inc()
	if err != nil {
		m.set.GetOrCreateCounter(`ratatoskr_gateway_request_errors_total{via="` + via + `",kind="` + KindOf(err).String() + `"}`).Inc()
	}
}

// Published counts messages a front end published.
func (m *Metrics) Published(via string, n int) {
	m.counter("ratatoskr_gateway_published_messages_total", via).Add(n)
}

// Delivered counts messages a front end delivered to its clients.
func (m *Metrics) Delivered(via string, n int) {
	m.counter("ratatoskr_gateway_delivered_messages_total", via).Add(n)
}

// Streams counts open streams (subscriptions, WebSockets) by front end.
func (m *Metrics) Streams(via string, delta int) {
	m.set.GetOrCreateGauge(`ratatoskr_gateway_streams{via="`+via+`"}`, nil).Add(float64(delta))
}

var kindNames = [...]string{KindInternal: "internal", KindInvalid: "invalid", KindUnauthenticated: "unauthenticated",
	KindDenied: "denied", KindNotFound: "not_found", KindExists: "exists", KindTooLarge: "too_large",
	KindRange: "out_of_range", KindExhausted: "exhausted", KindUnavailable: "unavailable", KindConflict: "conflict",
	KindCanceled: "canceled", KindTimeout: "timeout"}

// String names the kind, as the metrics' kind label does.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "internal"
}
