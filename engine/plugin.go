package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
)

// Plugins: how an embedder, and the built-in audit log, see what the
// broker does without slowing it down.
//
// Events come from shard threads (one per stored publish batch) and from
// event loops and the group coordinator (everything else). None of them
// may wait for a plugin, so each plugin gets a bounded queue of its own and
// a goroutine that hands it the events in order:
//
//	shard / event loop ──emit──▶ [queue, plugin A] ──▶ goroutine ──▶ A.Handle
//	                        └──▶ [queue, plugin B] ──▶ goroutine ──▶ B.Handle
//
// A full queue drops the event for that plugin only, and counts it. A
// handler that panics is recovered, logged at most once per
// pluginLogInterval, counted, and given the next event. With no plugins an
// emit is one length check, and the shards get no batch hook at all.

// Plugin receives the broker's telemetry events.
type Plugin interface {
	// Name identifies the plugin in logs and PluginStats.
	Name() string
	// Handle gets every event the plugin accepts, in the order the broker
	// emitted them, on the plugin's own goroutine. An error is counted and
	// logged (rate-limited); the plugin keeps receiving events.
	Handle(ev Event) error
}

// EventFilter is implemented by a plugin that wants only some kinds of
// events; the others are never queued for it. A plugin that does not want
// EventBatchPublished costs the publish path nothing. Accepts is asked
// once per kind, by New.
type EventFilter interface {
	Accepts(kind EventKind) bool
}

// PluginFlusher is implemented by a plugin that buffers its output: Flush
// is called whenever its queue is momentarily empty, and before Close.
type PluginFlusher interface {
	Flush() error
}

// A plugin that implements io.Closer is closed when the broker shuts down,
// after its queue was drained.

// AllEventKinds lists every EventKind, for plugins and filters.
var AllEventKinds = []EventKind{
	EventTopicCreated, EventTopicUpdated, EventTopicDeleted, EventBatchPublished,
	EventSubscriberJoined, EventSubscriberLeft, EventSubscriberFailed, EventMessageDeadLetter,
	EventGroupChanged, EventConnAccepted, EventConnRefused, EventConnClosed, EventAdminAction, EventAuth,
	EventAccessDenied, EventSecurityChanged,
}

// DefaultPluginQueue is how many events wait for one plugin before more
// are dropped.
const DefaultPluginQueue = 4096

// pluginLogInterval bounds how often one plugin's panics and errors are
// logged.
const pluginLogInterval = 10 * time.Second

// Option changes how New builds a broker.
type Option func(*options)

type options struct {
	plugins   []Plugin
	queueSize int
}

// WithPlugin adds a plugin. Plugins get events in the order they were
// added to the broker, each on its own goroutine.
func WithPlugin(p Plugin) Option {
	return func(o *options) { o.plugins = append(o.plugins, p) }
}

// WithPluginQueue sets the queue length of every plugin (default
// DefaultPluginQueue): a plugin that falls this many events behind loses
// the next ones.
func WithPluginQueue(n int) Option {
	return func(o *options) { o.queueSize = n }
}

// PluginStats are one plugin's counters.
type PluginStats struct {
	Name      string
	Delivered uint64 // events handed to Handle
	Dropped   uint64 // events lost to a full queue
	Panics    uint64 // Handle calls that panicked
	Errors    uint64 // Handle and Flush calls that returned an error
	Queued    int    // events waiting now
}

// pluginRunner feeds one plugin from its queue.
type pluginRunner struct {
	p       Plugin
	accepts map[EventKind]bool
	queue   chan Event
	stop    chan context.Context // the shutdown's context, once
	done    chan struct{}
	log     func(msg string, args ...any)
	err     error // from Close; read after done

	delivered atomic.Uint64
	dropped   atomic.Uint64
	panics    atomic.Uint64
	errors    atomic.Uint64
	lastLog   atomic.Int64 // unix nanoseconds of the last panic or error logged
}

// plugins is the engine's set of plugin runners. The zero value has none.
type plugins struct {
	all      []*pluginRunner
	batch    []*pluginRunner // those that accept EventBatchPublished
	stopOnce sync.Once
}

// start builds a runner per plugin and starts them.
func (ps *plugins) start(list []Plugin, queueSize int, warn func(msg string, args ...any)) {
	for _, p := range list {
		r := &pluginRunner{p: p, accepts: map[EventKind]bool{}, queue: make(chan Event, queueSize),
			stop: make(chan context.Context, 1), done: make(chan struct{}), log: warn}
		f, filtered := p.(EventFilter)
		for _, k := range AllEventKinds {
			r.accepts[k] = !filtered || f.Accepts(k)
		}
		ps.all = append(ps.all, r)
		if r.accepts[EventBatchPublished] {
			ps.batch = append(ps.batch, r)
		}
		go r.run()
	}
}

// pluginGrace is how long Shutdown waits for the plugins to drain their
// queues, flush and close, after everything else has stopped.
const pluginGrace = 3 * time.Second

// startPlugins applies New's options and starts the plugins, the audit
// log last.
func (e *Engine) startPlugins(opts []Option) error {
	o := options{queueSize: DefaultPluginQueue}
	for _, opt := range opts {
		opt(&o)
	}
	if o.queueSize < 1 {
		return fmt.Errorf("engine: plugin queue length %d: must be at least 1", o.queueSize)
	}
	if slices.Contains(o.plugins, nil) {
		return errors.New("engine: WithPlugin(nil)")
	}
	if e.cfg.EventLog != "" {
		l, err := telemetry.OpenEventLog(e.cfg.EventLog)
		if err != nil {
			return err
		}
		o.plugins = append(o.plugins, l)
	}
	if e.cfg.AuditLog != "" {
		a, err := telemetry.OpenAuditLog(e.cfg.AuditLog)
		if err != nil {
			return err
		}
		o.plugins = append(o.plugins, a)
	}
	e.plugins.start(o.plugins, o.queueSize, e.log.Warn)
	return nil
}

// observed reports whether any plugin runs: callers that would build
// strings for an event check it first.
func (e *Engine) observed() bool { return len(e.plugins.all) > 0 }

// emit hands ev to every plugin that accepts it, stamping its time. It
// never blocks. With no plugins it is one check.
func (e *Engine) emit(ev Event) {
	if len(e.plugins.all) == 0 {
		return
	}
	e.dispatch(ev)
}

// dispatch is emit's part for when there are plugins.
func (e *Engine) dispatch(ev Event) {
	ev.Time = time.Now()
	for _, r := range e.plugins.all {
		if ok, known := r.accepts[ev.Kind]; ok || !known {
			r.offer(&ev)
		}
	}
}

// onBatch is the shards' OnBatch hook, installed only when some plugin
// accepts EventBatchPublished.
func (e *Engine) onBatch(p *shard.Partition, base int64, count, bytes int) {
	ev := Event{Time: time.Now(), Kind: EventBatchPublished, Topic: p.Topic, Partition: int(p.ID),
		Offset: base, Count: count, Bytes: int64(bytes)}
	for _, r := range e.plugins.batch {
		r.offer(&ev)
	}
}

// batchHook returns the shards' OnBatch hook: nil when no plugin wants
// batch events, so the publish path pays one nil check.
func (e *Engine) batchHook() func(*shard.Partition, int64, int, int) {
	if len(e.plugins.batch) == 0 {
		return nil
	}
	return e.onBatch
}

// offer queues ev unless the queue is full.
func (r *pluginRunner) offer(ev *Event) {
	select {
	case r.queue <- *ev:
	default:
		r.dropped.Add(1)
	}
}

// run hands queued events to the plugin, flushing it whenever the queue
// runs empty, until the broker stops; then it drains the queue (as long
// as the shutdown's context allows) and closes the plugin.
func (r *pluginRunner) run() {
	defer close(r.done)
	flusher, _ := r.p.(PluginFlusher)
	for {
		select {
		case ev := <-r.queue:
			r.handle(ev)
			if flusher != nil && len(r.queue) == 0 {
				r.flush(flusher)
			}
		case ctx := <-r.stop:
			r.finish(ctx, flusher)
			return
		}
	}
}

// finish drains the queue until ctx ends, flushes and closes the plugin.
// Nobody else receives from the queue, so a non-empty queue never blocks.
func (r *pluginRunner) finish(ctx context.Context, flusher PluginFlusher) {
	for ctx.Err() == nil && len(r.queue) > 0 {
		r.handle(<-r.queue)
	}
	if n := len(r.queue); n > 0 {
		r.log("plugin queue not drained by the shutdown deadline", "plugin", r.p.Name(), "lost", n)
	}
	if flusher != nil {
		r.flush(flusher)
	}
	if c, ok := r.p.(io.Closer); ok {
		if err := c.Close(); err != nil {
			r.err = fmt.Errorf("engine: closing plugin %s: %w", r.p.Name(), err)
		}
	}
}

// handle calls the plugin, recovering and counting a panic.
func (r *pluginRunner) handle(ev Event) {
	defer func() {
		if v := recover(); v != nil {
			n := r.panics.Add(1)
			r.report("plugin panicked", "event", string(ev.Kind), "panic", fmt.Sprint(v), "panics", n)
		}
	}()
	r.delivered.Add(1)
	if err := r.p.Handle(ev); err != nil {
		n := r.errors.Add(1)
		r.report("plugin failed to handle an event", "event", string(ev.Kind), "err", err, "errors", n)
	}
}

// flush calls the plugin's Flush, recovering a panic like handle.
func (r *pluginRunner) flush(f PluginFlusher) {
	defer func() {
		if v := recover(); v != nil {
			n := r.panics.Add(1)
			r.report("plugin panicked in Flush", "panic", fmt.Sprint(v), "panics", n)
		}
	}()
	if err := f.Flush(); err != nil {
		n := r.errors.Add(1)
		r.report("plugin failed to flush", "err", err, "errors", n)
	}
}

// report logs a plugin's panic or error, at most once per
// pluginLogInterval; the counters say how many there were.
func (r *pluginRunner) report(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if last != 0 && now-last < int64(pluginLogInterval) || !r.lastLog.CompareAndSwap(last, now) {
		return
	}
	r.log(msg, append([]any{"plugin", r.p.Name()}, args...)...)
}

// stop drains and closes every plugin, once, waiting until ctx ends. A
// plugin whose Handle is still blocked then is left to finish on its own.
// Events emitted later stay in the queues and are never handled.
func (ps *plugins) stop(ctx context.Context) error {
	var errs []error
	ps.stopOnce.Do(func() {
		for _, r := range ps.all {
			r.stop <- ctx
		}
		for _, r := range ps.all {
			select {
			case <-r.done:
			case <-ctx.Done():
			}
			select {
			case <-r.done:
				errs = append(errs, r.err)
			default:
				errs = append(errs, fmt.Errorf("engine: plugin %s did not stop by the shutdown deadline", r.p.Name()))
			}
		}
	})
	return errors.Join(errs...)
}

// stopPluginsAfterFailure stops the plugins of a broker that failed to
// start, within the shutdown timeout.
func (e *Engine) stopPluginsAfterFailure() {
	ctx := context.Background()
	if e.cfg.ShutdownTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.ShutdownTimeout)
		defer cancel()
	}
	if err := e.plugins.stop(ctx); err != nil {
		e.log.Error("stopping plugins", "err", err)
	}
}

// PluginStats returns every plugin's counters, in the order they were
// added; the built-in audit log, when on, is last.
func (e *Engine) PluginStats() []PluginStats {
	out := make([]PluginStats, len(e.plugins.all))
	for i, r := range e.plugins.all {
		out[i] = PluginStats{Name: r.p.Name(), Delivered: r.delivered.Load(), Dropped: r.dropped.Load(),
			Panics: r.panics.Load(), Errors: r.errors.Load(), Queued: len(r.queue)}
	}
	return out
}
