// Package engine is the broker's composition root: it validates the
// Config, builds the shards, the topic registry, the group coordinator,
// the network side (package server) and the HTTP side (package httpapi),
// starts and stops them in order, and implements the small interfaces
// through which they reach each other (server.Broker, coord.Broker,
// httpapi.Broker). It also keeps what needs all of them: the topic
// registry, the plugin runners, the metrics and readiness
// (docs/DESIGN.md, "Package map").
//
// Threads and data flow (see docs/DESIGN.md):
//
//	client ─TCP─▶ gnet event loop ─op─▶ shard inbox ─▶ shard pass ─frames─▶ Outbox ─▶ writev ─▶ client
//
// The event loops and sessions are package server's; the shards are
// shard/driver's. Durable topics are written and fsynced by the shard's
// syncer, which runs the pass that acks them.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw"
	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/redislog"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Engine is a running broker.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	shards []*driver.Driver
	topics *registry
	groups *coord.Coordinator
	// grepl, in a cluster, places the groups on the leaders of the
	// offsets topic's partitions (groupsrepl.go); nil on a single node.
	grepl *groupRepl
	cache *storage.BlockCache
	// reclaim deletes the data of deleted topics and segments in the
	// background (storage.Reclaimer); from Start on.
	reclaim *storage.Reclaimer
	// redis keeps the logs of storage=redis topics (redis.go); nil
	// without RedisURL.
	redis *redislog.Store

	// srv is the network side: the native listener, the sessions and
	// their bounds (package server); it reaches back through netBroker.
	srv *server.Server

	http *httpapi.Server // the HTTP side (http.go)
	// gw hands the gateways their sessions (gateway.go); serving is set
	// while the native listener serves, which in-process sessions use.
	gw      *gateway.Gateway
	serving atomic.Bool
	ws      *wsgw.Handler // the WebSocket gateway; nil while /v1/ is off
	grpc    *grpcFront    // the gRPC front end (grpc.go); nil without GRPCAddr
	// certs is the TLS material, reloaded when its files change; nil
	// without TLSCertFile.
	certs *server.Certs

	plugins plugins

	// Observability (metrics.go, ready.go, http.go).
	metricSet *metrics.Set
	startedAt time.Time
	notReady  atomic.Pointer[string] // why Start has not finished; nil once it has
	disk      diskProbe
	history   *httpapi.History

	// Security (security.go): the users, tenants and rules, and who
	// checks credentials against them.
	security     *auth.Store
	authn        *auth.Authenticator
	authFailures *auth.FailLimiter
	quotaStop    chan struct{} // closed to stop the storage measurements
	quotaDone    chan struct{}

	// cluster is this node's part in a cluster (cluster.go); nil on a
	// single node.
	cluster *clusterNode

	// startFailed says Start failed, having stopped what it started:
	// Shutdown then has nothing left to stop. Written by Start, read by
	// Shutdown, which its caller runs after Start returned.
	startFailed bool
}

// New validates cfg and returns a broker that is not listening yet. Its
// plugins (WithPlugin, and the audit log when Config.AuditLog is set)
// already run.
func New(cfg Config, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, metricSet: metrics.NewSet()}
	if cfg.TLSCertFile != "" {
		certs, err := server.LoadCerts(server.TLSFiles{Cert: cfg.TLSCertFile, Key: cfg.TLSKeyFile,
			ClientCA: cfg.TLSClientCAFile}, cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		e.certs = certs
	}
	e.setNotReady("not started")
	if err := e.newAuth(); err != nil {
		return nil, err
	}
	e.newGateway()
	e.newHTTP()
	if err := e.startPlugins(opts); err != nil {
		return nil, err
	}
	e.shards = make([]*driver.Driver, cfg.Shards)
	states := make([]*shard.Shard, cfg.Shards)
	for i := range e.shards {
		e.shards[i] = driver.New(driver.Config{Pin: pinner(cfg.PinShards), Logger: cfg.Logger,
			RetentionInterval: cfg.RetentionInterval, Shard: shard.Config{ID: i, Shards: cfg.Shards,
				MaxAckDelay: cfg.MaxAckDelay, SlowConsumerTimeout: cfg.SlowConsumerTimeout, StuckAfter: cfg.StuckConsumerAfter,
				OnBatch: e.batchHook(), Observer: newShardMetrics(e.metricSet, i), MaxProducers: cfg.MaxProducers}})
		states[i] = e.shards[i].Shard()
	}
	cache, err := storage.NewBlockCache(cfg.CacheBytes)
	if err != nil {
		e.stopPluginsAfterFailure()
		return nil, fmt.Errorf("engine: read cache: %w", err)
	}
	e.cache = cache
	e.topics = newRegistry(&e.cfg, states, cache)
	e.topics.quotas = e.tenantQuotas
	e.groups = newCoordinator(e)
	e.srv = newServer(e)
	e.security.OnRevoke(func(user, tenant string) { e.srv.RevokeUser(user, tenant) })
	e.security.OnChange(e.srv.Recheck)
	return e, nil
}

// newServer builds the network side, sharing the topic table, the group
// coordinator and the network limits of the config.
// brokerOnly is the topic clients may not write: a cluster's offsets
// topic, whose checkpoint markers let retention remove records (a
// client's would remove groups' offsets).
func brokerOnly(c *Config) string {
	if len(c.Peers) > 0 {
		return OffsetsTopic
	}
	return ""
}

func newServer(e *Engine) *server.Server {
	c := &e.cfg
	return server.New(server.Config{Broker: (*netBroker)(e), Topics: e.topics.snap, Groups: e.groups,
		Shards: c.Shards, Logger: c.Logger, Addr: c.Addr, TLSAddr: c.TLSAddr, Certs: e.certs, EventLoops: c.EventLoops,
		MaxConnections: c.MaxConnections, MaxHandshakesPerAddr: c.MaxHandshakesPerAddr,
		HandshakeTimeout: c.HandshakeTimeout, MaxMessageBytes: c.MaxMessageBytes, MaxFrameBytes: c.MaxFrameBytes,
		BrokerOnly:      brokerOnly(c),
		MaxPendingBytes: c.MaxPendingBytes, MaxInflightBytes: c.MaxInflightBytes,
		SlowConsumerTimeout: c.SlowConsumerTimeout, MaxOutboundBytes: c.MaxOutboundBytes,
		MaxFetchesPerConn: c.MaxFetchesPerConn, MaxFetchWait: c.MaxFetchWait,
		AutoCreateTopics: c.AutoCreateTopics, AutoCreateRate: c.AutoCreateRate,
		Auth: e.netAuth(), AuthFailures: e.authFailures})
}

// Start starts the HTTP server, recovers the topics and groups, and starts
// the shards and the native listener; it returns once they accept
// connections. HTTP comes first so that /readyz can say that recovery
// runs. When it fails, the plugins are stopped too.
func (e *Engine) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			e.stopPluginsAfterFailure()
			e.gw.Close()
			e.startFailed = true
		}
	}()
	if err := storage.MkdirDurable(e.cfg.FS, e.cfg.DataDir, 1); err != nil {
		return fmt.Errorf("engine: data directory: %w", err)
	}
	rc, err := storage.NewReclaimer(e.cfg.FS, e.cfg.DataDir+"/"+trashDir, e.log)
	if err != nil {
		return fmt.Errorf("engine: data directory: %w", err)
	}
	e.reclaim, e.topics.trash = rc, rc
	defer func() {
		if err != nil {
			rc.Close()
		}
	}()
	if err := e.openRedis(ctx); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			e.closeRedis()
		}
	}()
	e.startedAt = time.Now()
	e.setNotReady("recovering topics and consumer groups")
	if err := e.startHTTP(); err != nil {
		return err
	}
	for _, s := range e.shards {
		s.Start()
	}
	if len(e.cfg.Peers) > 0 {
		if err := e.startCluster(); err != nil {
			e.stopShards()
			e.stopHTTP(ctx)
			return err
		}
	}
	// A failed start stops the cluster side before the shards and logs it
	// writes to: its host's last answers go to running shards.
	stopCluster := func() {
		if e.cluster != nil {
			e.cluster.close()
		}
	}
	if err := e.topics.load(); err != nil {
		stopCluster()
		e.stopShards()
		e.stopHTTP(ctx)
		return fmt.Errorf("engine: recovery: %w", err)
	}
	if err := e.groups.Load(); err != nil {
		stopCluster()
		e.stopShards()
		e.stopHTTP(ctx)
		_ = e.topics.closeAll()
		return fmt.Errorf("engine: consumer groups: %w", err)
	}
	if e.grepl != nil {
		e.grepl.start()
	}
	e.setNotReady("starting the native listener")
	if err := e.srv.Start(); err != nil {
		if e.grepl != nil {
			e.grepl.stop()
		}
		stopCluster()
		e.stopShards()
		e.groups.Close()
		_ = e.topics.closeAll()
		e.stopHTTP(ctx)
		return fmt.Errorf("engine: listen %s: %w", e.cfg.Addr, err)
	}
	e.setNotReady("")
	e.serving.Store(true)
	if err := e.startGRPC(); err != nil {
		// Unwound in Shutdown's order.
		e.serving.Store(false)
		e.srv.Drain()
		if e.grepl != nil {
			e.grepl.stop()
		}
		stopCluster()
		e.stopShards()
		_ = e.srv.Stop(ctx)
		e.srv.Close()
		e.groups.Close()
		_ = e.topics.closeAll()
		e.stopHTTP(ctx)
		return err
	}
	if c := e.cluster; c != nil {
		addr := e.cfg.AdvertiseAddr
		if addr == "" {
			addr = addrString(e.srv.Addr())
		}
		go c.register(addr, e.HTTPAddr())
	}
	e.startQuotaLoop()
	e.history.Start()
	e.log.Info("ratatoskr listening", "addr", addrString(e.srv.Addr()), "http", e.HTTPAddr(),
		"tls_addr", addrString(e.srv.TLSAddr()), "mutual_tls", e.certs != nil && e.certs.MutualTLS(), "https", e.httpsOn(),
		"shards", len(e.shards), "event_loops", e.cfg.EventLoops)
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// Addr is the native protocol's plaintext address; nil without one.
func (e *Engine) Addr() net.Addr { return e.srv.Addr() }

// TLSAddr is the native protocol's TLS address; nil without one.
func (e *Engine) TLSAddr() net.Addr { return e.srv.TLSAddr() }

// ReloadCerts loads the TLS files now if they changed, as the next
// handshake after a second would, and reports whether new ones are in
// use (false without TLS).
func (e *Engine) ReloadCerts() bool { return e.certs != nil && e.certs.Reload() }

// HTTPAddr is the HTTP address, or "" when HTTP is disabled.
func (e *Engine) HTTPAddr() string {
	return e.http.Addr()
}

// Shutdown stops the broker gracefully: it refuses new connections and
// publishes, lets the shards finish what they hold, waits (up to the
// configured timeout or ctx) for queued frames to be written, tells every
// client it is shutting down, and closes everything.
func (e *Engine) Shutdown(ctx context.Context) error {
	if !e.srv.Drain() {
		return errors.New("engine: already shut down")
	}
	if e.startFailed {
		return nil // Start stopped what it had started before it failed
	}
	if e.cfg.ShutdownTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.ShutdownTimeout)
		defer cancel()
	}
	e.serving.Store(false)
	e.stopGRPC(ctx)
	e.gw.Close() // the gateways' shared sessions; their streams end with the connections
	e.history.Close()
	e.stopQuotaLoop()
	if e.grepl != nil {
		e.grepl.stop() // groups stop moving before the leaderships do
	}
	if e.cluster != nil {
		e.cluster.close() // leaderships move first; then no group writes a log
	}
	e.stopShards()
	e.srv.WaitFlushed(ctx)
	err := e.srv.Stop(ctx)
	e.srv.Close()
	e.stopHTTP(ctx)
	e.groups.Close()
	if cerr := e.topics.closeAll(); cerr != nil {
		e.log.Error("closing logs", "err", cerr)
		err = errors.Join(err, cerr)
	}
	e.cache.Close()
	if e.reclaim != nil {
		e.reclaim.Close()
	}
	e.closeRedis()
	// The plugins get their own grace period: the steps above may have used
	// up ctx, and the audit log's last lines (the closes) matter.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), pluginGrace)
	defer pcancel()
	if perr := e.plugins.stop(pctx); perr != nil {
		e.log.Error("stopping plugins", "err", perr)
		err = errors.Join(err, perr)
	}
	e.log.Info("ratatoskr stopped")
	return err
}

// Fatal delivers an error when the broker can no longer serve (its
// native listener failed for good). Whoever runs the broker should then
// shut it down and exit non-zero, so that a supervisor restarts it.
func (e *Engine) Fatal() <-chan error { return e.srv.Fatal() }

func (e *Engine) stopShards() {
	for _, s := range e.shards {
		s.Stop()
	}
}

// origin says who asked for a change, for its telemetry event: the actor
// ("client", "admin-token", "broker") and the peer's address.
type origin = server.Origin

// byBroker is the origin of changes the broker makes on its own.
var byBroker = origin{Actor: "broker"}

// createTopicBy is createTopic on behalf of by. A topic actually created
// emits EventTopicCreated; so does a failed explicit create (existOK
// false), with its error.
func (e *Engine) createTopicBy(by origin, name string, partitions uint32, kvs []wire.KV, existOK bool) (*Topic, error) {
	tc, err := e.topics.parseTopicConfig(partitions, kvs)
	var t *Topic
	created := false
	switch {
	case err != nil:
	case e.cluster != nil:
		t, created, err = e.cluster.createTopic(name, tc, kvs, existOK)
	default:
		t, created, err = e.topics.create(name, tc, existOK)
	}
	if created || err != nil && !existOK {
		e.emitTopic(EventTopicCreated, by, name, "create", err)
	}
	return t, err
}

// updateTopicBy is updateTopic on behalf of by; it emits EventTopicUpdated.
func (e *Engine) updateTopicBy(by origin, name string, kvs []wire.KV) (*Topic, error) {
	if e.cluster != nil {
		err := e.cluster.alterTopic(name, kvs)
		e.emitTopic(EventTopicUpdated, by, name, "update", err)
		if err != nil {
			return nil, err
		}
		if t := e.topics.get([]byte(name)); t != nil {
			return t, nil
		}
		return nil, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
	}
	t, err := e.topics.update(name, kvs)
	e.emitTopic(EventTopicUpdated, by, name, "update", err)
	return t, err
}

// deleteTopicBy is deleteTopic on behalf of by; it emits EventTopicDeleted.
func (e *Engine) deleteTopicBy(by origin, name string) error {
	t := e.topics.get([]byte(name))
	if e.cluster != nil {
		err := e.cluster.deleteTopic(name)
		e.emitTopic(EventTopicDeleted, by, name, "delete", err)
		return err // the applier told the groups
	}
	err := e.topics.remove(name)
	e.emitTopic(EventTopicDeleted, by, name, "delete", err)
	if err != nil {
		return err
	}
	e.groups.TopicRemoved(topic.Group{T: t})
	return nil
}

func (e *Engine) emitTopic(kind EventKind, by origin, name, action string, err error) {
	if !e.observed() {
		return
	}
	e.emit(Event{Kind: kind, Topic: name, Partition: -1, Actor: by.Actor, Remote: by.Remote,
		Action: action, Target: "topic/" + name, Err: err})
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Connections   int64
	Accepted      uint64
	SlowConsumers uint64
	// DirectWrites counts outbox flushes written straight to the socket by
	// the thread that produced them (a shard inline on another event
	// loop), and DirectShort those of them the socket did not take whole.
	DirectWrites uint64
	DirectShort  uint64
	Topics       int
	Batches      uint64
	Messages     uint64
	Errors       map[string]uint64
}

// Stats returns the broker's counters.
func (e *Engine) Stats() Stats {
	c := e.srv.Counters()
	st := Stats{Connections: c.Connections, Accepted: c.Accepted,
		SlowConsumers: c.SlowConsumers, DirectWrites: c.DirectWrites, DirectShort: c.DirectShort,
		Topics: e.topics.count(), Errors: map[string]uint64{}}
	for _, s := range e.shards {
		b, m := s.Stats()
		st.Batches += b
		st.Messages += m
	}
	for code, n := range c.Errors {
		if n > 0 {
			st.Errors[wire.Code(code).String()] = n
		}
	}
	return st
}
