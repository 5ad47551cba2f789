package gateway

import (
	"bytes"
	"io"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
)

// Metrics are the gateways' counters, by front end ("grpc", "http",
// "ws"), in the broker's /metrics (docs/METRICS.md). What the sessions do
// (publishes, deliveries, errors by code, slow consumers) the broker
// counts as for any session; these count what only a front end sees.
type Metrics struct {
	set *metrics.Set
}

var (
	mSessionsOpened = promtext.NewCounter("ratatoskr_gateway_sessions_opened_total",
		"Sessions the gateways opened for their clients (authenticated), by front end.")
	mSessionsFailed = promtext.NewCounter("ratatoskr_gateway_sessions_failed_total",
		"Sessions the gateways failed to open (refused credentials, the broker's limits or shutdown), by front end.")
	mRequests = promtext.NewCounter("ratatoskr_gateway_requests_total",
		"Requests the gateways served (RPCs, HTTP requests, WebSocket commands), by front end.")
	mRequestErrors = promtext.NewCounter("ratatoskr_gateway_request_errors_total",
		"Requests the gateways answered with an error, by front end and kind of error.")
	mPublished = promtext.NewCounter("ratatoskr_gateway_published_messages_total",
		"Messages the gateways' clients published and the broker acknowledged, by front end.")
	mDelivered = promtext.NewCounter("ratatoskr_gateway_delivered_messages_total",
		"Messages the gateways delivered to their clients, by front end.")
	mStreams = promtext.NewGauge("ratatoskr_gateway_streams",
		"Open streams (subscriptions, event streams, WebSockets), by front end.")

	families = []promtext.Family{mSessionsOpened, mSessionsFailed, mRequests, mRequestErrors, mPublished, mDelivered, mStreams}
)

func newMetrics() *Metrics { return &Metrics{set: metrics.NewSet()} }

func (m *Metrics) counter(f promtext.Family, via string) *metrics.Counter {
	return m.set.GetOrCreateCounter(f.Name + `{via="` + via + `"}`)
}

func (m *Metrics) sessionOpened(via string) { m.counter(mSessionsOpened, via).Inc() }
func (m *Metrics) sessionFailed(via string) { m.counter(mSessionsFailed, via).Inc() }

// Request counts a request (an RPC, an HTTP request, a WebSocket
// command) and, when err is not nil, its failure by kind.
func (m *Metrics) Request(via string, err error) {
	m.counter(mRequests, via).Inc()
	if err != nil {
		m.set.GetOrCreateCounter(mRequestErrors.Name + `{via="` + via + `",kind="` + KindOf(err).String() + `"}`).Inc()
	}
}

// Published counts messages a front end published.
func (m *Metrics) Published(via string, n int) { m.counter(mPublished, via).Add(n) }

// Delivered counts messages a front end delivered to its clients.
func (m *Metrics) Delivered(via string, n int) { m.counter(mDelivered, via).Add(n) }

// Streams counts open streams (subscriptions, WebSockets) by front end.
func (m *Metrics) Streams(via string, delta int) {
	m.set.GetOrCreateGauge(mStreams.Name+`{via="`+via+`"}`, nil).Add(float64(delta))
}

// OpenStreams is the streams gauge of front end via.
func (m *Metrics) OpenStreams(via string) int {
	return int(m.set.GetOrCreateGauge(mStreams.Name+`{via="`+via+`"}`, nil).Get())
}

// WritePrometheus writes the families in the text format, each announced
// with its HELP and TYPE lines even before it has samples.
func (m *Metrics) WritePrometheus(w io.Writer) {
	var buf bytes.Buffer
	m.set.WritePrometheus(&buf)
	known := make(map[string]promtext.Family, len(families))
	for _, f := range families {
		known[f.Name] = f
	}
	promtext.Annotate(w, buf.Bytes(), known)
	for _, f := range families {
		if !bytes.Contains(buf.Bytes(), []byte(f.Name+"{")) {
			f.WriteHeader(w)
		}
	}
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
