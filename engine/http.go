package engine

import (
	"context"
	"crypto/tls"
	"io"
	"runtime"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The HTTP side (admin API, health, metrics history, dashboard) is
// package httpapi; this file wires it to the broker. httpBroker is the
// httpapi.Broker of an Engine: each method builds a plain view from what
// is safe to read from any goroutine (registry snapshots, log stats,
// atomics) or takes the path the native protocol takes.

// The health report's and metrics history's types are httpapi's. The
// names below are aliases, not copies, so Engine.Health and
// Engine.History's API is as it was.

// HealthReport is the body of GET /api/v1/health (httpapi.HealthReport).
type HealthReport = httpapi.HealthReport

// BrokerHealth is the broker-wide part of a HealthReport.
type BrokerHealth = httpapi.BrokerHealth

// TopicHealth is one topic in a HealthReport.
type TopicHealth = httpapi.TopicHealth

// PartitionHealth is a partition with a problem, in a TopicHealth.
type PartitionHealth = httpapi.PartitionHealth

// ClusterHealth describes the cluster in a HealthReport.
type ClusterHealth = httpapi.ClusterHealth

// ResourcesHealth is the process's and data directory's resources.
type ResourcesHealth = httpapi.ResourcesHealth

// HistorySample is one sample of the metrics history.
type HistorySample = httpapi.HistorySample

// TopicSample is one topic in a HistorySample.
type TopicSample = httpapi.TopicSample

// HistoryReport is the body of GET /api/v1/metrics/history.
type HistoryReport = httpapi.HistoryReport

// Health statuses.
const (
	HealthHealthy   = httpapi.HealthHealthy
	HealthDegraded  = httpapi.HealthDegraded
	HealthUnhealthy = httpapi.HealthUnhealthy
)

// DashboardURL is the dashboard's address on an HTTP listener at addr
// (host:port), with the admin token in the fragment when token is not
// empty (httpapi.DashboardURL).
func DashboardURL(addr, token string) string { return httpapi.DashboardURL(addr, token) }

// DashboardURLScheme is DashboardURL with the scheme, http or https.
func DashboardURLScheme(scheme, addr, token string) string {
	return httpapi.DashboardURLScheme(scheme, addr, token)
}

// AdminTokenPath is where a broker with data directory dataDir keeps the
// admin token it generated, for tools that print the dashboard's address.
func AdminTokenPath(dataDir string) string { return httpapi.AdminTokenPath(dataDir) }

// newHTTP builds the HTTP side; it serves from startHTTP on.
func (e *Engine) newHTTP() {
	e.history = httpapi.NewHistory(e.cfg.HistoryInterval, e.cfg.HistoryRetention, e.sample)
	e.http = httpapi.New(httpapi.Config{Addr: e.cfg.HTTPAddr, AdminToken: e.cfg.AdminToken, FS: e.cfg.FS,
		DataDir: e.cfg.DataDir, Pprof: e.cfg.Pprof, MaxPartitions: e.cfg.MaxPartitions, History: e.history,
		Logger: e.log, TLS: e.httpTLS(), Auth: e.authn, AuthFailures: e.authFailures,
		Gateway: e.gatewayHandler()}, (*httpBroker)(e))
}

// httpsOn reports whether HTTP is served over TLS: with a certificate,
// unless HTTPTLS is off.
func (e *Engine) httpsOn() bool { return e.certs != nil && e.cfg.HTTPTLS && e.cfg.HTTPAddr != "" }

// httpTLS is the HTTPS listener's configuration, or nil for HTTP.
func (e *Engine) httpTLS() *tls.Config {
	if !e.httpsOn() {
		return nil
	}
	return e.certs.HTTP()
}

func (e *Engine) startHTTP() error { return e.http.Start() }

func (e *Engine) stopHTTP(ctx context.Context) { e.http.Shutdown(ctx) }

// Health reports the broker's health, as GET /api/v1/health serves it.
func (e *Engine) Health() HealthReport { return e.http.Health() }

// History returns the metrics history, oldest sample first.
func (e *Engine) History() HistoryReport { return e.history.Report() }

// sample reads the broker's counters for the metrics history.
func (e *Engine) sample() HistorySample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	nc := e.srv.Counters()
	s := HistorySample{Time: time.Now(), Connections: nc.Connections, MemoryBytes: ms.HeapAlloc,
		Goroutines: runtime.NumGoroutine(), Topics: map[string]TopicSample{}}
	for _, n := range nc.Errors {
		s.Errors += n
	}
	for _, t := range e.topics.list() {
		var ts TopicSample
		for _, p := range t.Parts {
			c := p.Counters()
			ts.PublishedMessages += c.PublishedMessages
			s.PublishedBytes += c.PublishedBytes
			s.DeliveredMessages += c.DeliveredMessages
			s.DeliveredBytes += c.DeliveredBytes
		}
		s.PublishedMessages += ts.PublishedMessages
		s.Subscribers += int64(t.Subscriptions.Load())
		s.Topics[t.Name] = ts
	}
	return s
}

// httpBroker is an Engine as the HTTP side sees it (httpapi.Broker).
type httpBroker Engine

var _ httpapi.Broker = (*httpBroker)(nil)

func (b *httpBroker) e() *Engine { return (*Engine)(b) }

func (b *httpBroker) Starting() string {
	if why := b.notReady.Load(); why != nil {
		return *why
	}
	return ""
}

func (b *httpBroker) Draining() bool                     { return b.srv.Draining() }
func (b *httpBroker) NotReady(probe bool) []string       { return b.e().notReadyReasons(probe) }
func (b *httpBroker) Uptime() time.Duration              { return b.e().uptime() }
func (b *httpBroker) Dependencies() []httpapi.Dependency { return b.e().Dependencies() }
func (b *httpBroker) ConnectionCount() int64             { return b.srv.Counters().Connections }
func (b *httpBroker) WriteMetrics(w io.Writer)           { b.e().writeMetrics(w) }
func (b *httpBroker) Emit(ev telemetry.Event)            { b.e().emit(ev) }

func (b *httpBroker) Groups() []string {
	list := b.groups.List()
	out := make([]string, len(list))
	for i, g := range list {
		out[i] = g.Group
	}
	return out
}

// DescribeGroup describes a group once this node confirmed that it
// coordinates it (coord.Coordinator.DescribeConfirmed: in a cluster, a
// Raft ReadIndex, answered or failed within two election timeouts).
func (b *httpBroker) DescribeGroup(name string) (wire.GroupInfo, error) {
	return b.groups.DescribeConfirmed(name)
}

func (b *httpBroker) Topics() []httpapi.Topic {
	list := b.topics.list()
	out := make([]httpapi.Topic, len(list))
	for i, t := range list {
		out[i] = topicView(t)
	}
	return out
}

func (b *httpBroker) Topic(name string) (httpapi.Topic, bool) {
	t := b.topics.get([]byte(name))
	if t == nil {
		return httpapi.Topic{}, false
	}
	return topicView(t), true
}

func (b *httpBroker) CreateTopic(by httpapi.Origin, name string, partitions uint32, kvs []wire.KV) (httpapi.Topic, error) {
	return viewOr(b.e().createTopicBy(fromHTTP(by), name, partitions, kvs, false))
}

func (b *httpBroker) UpdateTopic(by httpapi.Origin, name string, kvs []wire.KV) (httpapi.Topic, error) {
	return viewOr(b.e().updateTopicBy(fromHTTP(by), name, kvs))
}

func (b *httpBroker) DeleteTopic(by httpapi.Origin, name string) error {
	return b.e().deleteTopicBy(fromHTTP(by), name)
}

// ResetGroup resets a group and waits until its new offsets are durable,
// or the request is gone.
func (b *httpBroker) ResetGroup(ctx context.Context, by httpapi.Origin, name string, st wire.Start) error {
	done := make(chan error, 1)
	b.groups.Reset(fromHTTP(by).Group(), name, st, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return wire.Errorf(wire.CodeShuttingDown, "the request ended before the reset was durable: "+ctx.Err().Error())
	}
}

func (b *httpBroker) Connections() []httpapi.Connection {
	conns := b.srv.Connections()
	out := make([]httpapi.Connection, len(conns))
	for i, c := range conns {
		out[i] = httpapi.Connection{Remote: c.Remote, Client: c.Client, ConnectedAt: c.ConnectedAt,
			Subscriptions: c.Subscriptions, Groups: c.Groups, QueuedBytes: c.QueuedBytes, Identity: c.Identity, Via: c.Via}
	}
	return out
}

func (b *httpBroker) Shards() []httpapi.Shard {
	out := make([]httpapi.Shard, len(b.shards))
	for i, s := range b.shards {
		batches, msgs := s.Stats()
		out[i] = httpapi.Shard{ID: s.ID(), InboxDepth: s.InboxLen(), InboxCap: s.InboxCap(),
			Batches: batches, Messages: msgs}
	}
	for _, t := range b.topics.list() {
		for _, p := range t.Parts {
			out[p.Shard.ID()].Partitions++
		}
	}
	return out
}

// fromHTTP is the engine's origin of an admin request.
func fromHTTP(by httpapi.Origin) origin { return origin{Actor: by.Actor, Remote: by.Remote} }

func viewOr(t *Topic, err error) (httpapi.Topic, error) {
	if err != nil {
		return httpapi.Topic{}, err
	}
	return topicView(t), nil
}

// topicView reads t's config and each partition's log stats once.
func topicView(t *Topic) httpapi.Topic {
	tc := t.Config()
	v := httpapi.Topic{Name: t.Name, Subscriptions: int64(t.Subscriptions.Load()),
		Config: httpapi.TopicConfig{MaxSubscribers: tc.MaxSubscribers, Storage: tc.Storage, Fsync: tc.Fsync.String(),
			Retention: tc.Retention.String(), RetentionBytes: tc.RetentionBytes,
			DeadLetterTopic: tc.DeadLetterTopic, MaxDeliveries: tc.MaxDeliveries, Encryption: topic.OnOff(tc.Encryption)},
		Parts: make([]httpapi.Partition, len(t.Parts))}
	for i, p := range t.Parts {
		st := p.Log.Stats()
		state, why := topic.PartitionState(&st)
		v.Parts[i] = httpapi.Partition{ID: p.ID, Shard: p.Shard.ID(), Subscribers: p.Subscribers(), Log: st,
			State: state, Reason: why}
	}
	return v
}
