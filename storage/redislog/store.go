// Package redislog keeps partition logs in Redis: a storage.Log whose
// batches live in a Redis stream per partition, for teams that want the
// broker's data where the rest of theirs is, shared and backed up with it.
//
// Each partition is a stream with one entry per record batch, whose ID's
// first part is the batch's base offset (so the stream is its own offset
// index), and a small hash with the log's end offset; see scripts.go.
// An append is one transaction per write, carrying every batch the shard
// staged since the last one: applied atomically, and only if the log ends
// where the broker expects, so that two brokers (or a stale one) can never
// interleave their batches in one partition (Log.transact).
//
// Durability is Redis's: a batch is acknowledged once Redis answered the
// script, and it survives what Redis's persistence makes it survive
// (Persistence). Nothing here waits for a disk.
//
// A Store is one Redis server shared by the logs of a broker; it watches
// the server's health, and while the server is unreachable every write
// fails at once with storage.ErrUnavailable rather than waiting.
package redislog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// Config is how to reach a Redis server.
type Config struct {
	// URL is redis://[user:password@]host:port[/db], or rediss:// for TLS.
	// The password is sent with AUTH (with the user: an ACL user).
	URL string
	// TLS, when set, is the TLS configuration (a CA bundle, a client
	// certificate); it turns TLS on for a redis:// URL too.
	TLS *tls.Config
	// Prefix starts every key the broker writes ("ratatoskr" by default):
	// brokers sharing one Redis each need their own.
	Prefix string
	// Timeout bounds every operation (5s by default). An append that
	// times out is in doubt: the log removes it before its next write.
	Timeout time.Duration
	// ProbeEvery is how often the server's health and persistence
	// settings are checked (1s by default).
	ProbeEvery time.Duration
	Logger     *slog.Logger
}

func (c *Config) fill() {
	if c.Prefix == "" {
		c.Prefix = "ratatoskr"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.ProbeEvery <= 0 {
		c.ProbeEvery = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Store is a connection to one Redis server, shared by the logs kept there.
type Store struct {
	cfg    Config
	addr   string
	client rueidis.Client

	mu        sync.Mutex
	down      error // why the server is unreachable; nil while it answers
	downSince time.Time
	persist   Persistence

	up   atomic.Bool
	stop chan struct{}
	done chan struct{}
}

// Open connects to the server, waiting for it until ctx ends (a broker
// and its Redis often start together), and checks that it can keep logs:
// Redis 7.0 or newer. It then watches the server until Close.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.fill()
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: bad URL: %w", err)
	}
	if cfg.TLS != nil {
		opt.TLSConfig = cfg.TLS
	}
	opt.DisableCache = true // no client-side caching: every read goes to the log
	opt.Dialer.Timeout = cfg.Timeout
	opt.ConnWriteTimeout = cfg.Timeout
	opt.ClientName = "ratatoskr"
	s := &Store{cfg: cfg, addr: strings.Join(opt.InitAddress, ","), stop: make(chan struct{}), done: make(chan struct{})}
	waited := false
	for {
		s.client, err = rueidis.NewClient(opt)
		if err == nil {
			break
		}
		if isAuthError(err) {
			return nil, fmt.Errorf("redis at %s refused the credentials: %w", s.addr, err)
		}
		if !waited {
			waited = true
			cfg.Logger.Warn("waiting for redis: the topics kept there need it", "redis", s.addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("redis at %s is unreachable: %w", s.addr, err)
		case <-time.After(200 * time.Millisecond): // retry the dial; ctx bounds the wait
		}
	}
	if err := s.checkVersion(ctx); err != nil {
		s.client.Close()
		return nil, err
	}
	s.probe(ctx)
	go s.watch()
	return s, nil
}

// Addr is the server's address, for messages and the health report.
func (s *Store) Addr() string { return s.addr }

// Close stops watching the server and closes the connections; the logs
// kept there must be closed first.
func (s *Store) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	<-s.done
	s.client.Close()
}

func (s *Store) checkVersion(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	info, err := s.client.Do(ctx, s.client.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return fmt.Errorf("redis at %s: INFO: %w", s.addr, err)
	}
	v := infoField(info, "redis_version")
	var major int
	if _, err := fmt.Sscanf(v, "%d.", &major); err != nil || major < 7 {
		return fmt.Errorf("redis at %s is version %q: the broker needs Redis 7.0 or newer (XADD with an explicit offset and an automatic sequence)", s.addr, v)
	}
	return nil
}

// infoField returns the value of name in an INFO reply.
func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// watch probes the server every ProbeEvery until Close.
func (s *Store) watch() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.ProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.probe(context.Background())
		}
	}
}

// probe checks that the server answers and reads its persistence
// settings.
func (s *Store) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res := s.client.Do(ctx, s.client.B().Ping().Build())
	if err := res.Error(); err != nil {
		s.failed(err)
		return
	}
	p := s.readPersistence(ctx)
	s.mu.Lock()
	s.persist = p
	s.mu.Unlock()
	s.answered()
}

// Health returns nil while the server answers, or why it does not.
func (s *Store) Health() error {
	if s.up.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down == nil {
		return nil
	}
	return fmt.Errorf("redis at %s is unreachable since %s: %w", s.addr, s.downSince.UTC().Format(time.RFC3339), s.down)
}

// failed records an error: a network error or timeout marks the server
// down (writes fail at once until a probe gets an answer); an error
// reply means it answered.
func (s *Store) failed(err error) {
	if !isNetworkError(err) {
		s.answered()
		return
	}
	s.mu.Lock()
	if s.down == nil {
		s.downSince = time.Now()
		s.cfg.Logger.Error("redis unreachable: writes to its topics fail until it answers", "redis", s.addr, "err", err)
	}
	s.down = err
	s.up.Store(false)
	s.mu.Unlock()
}

// answered records that the server answered.
func (s *Store) answered() {
	if s.up.Load() {
		return
	}
	s.mu.Lock()
	if s.down != nil {
		s.cfg.Logger.Info("redis answers again", "redis", s.addr, "down_for", time.Since(s.downSince).Round(time.Millisecond))
	}
	s.down = nil
	s.up.Store(true)
	s.mu.Unlock()
}

// isNetworkError reports whether err is not an answer from Redis: the
// connection failed, or no answer came in time.
func isNetworkError(err error) bool {
	if err == nil {
		return false
	}
	_, reply := rueidis.IsRedisErr(err)
	return !reply
}

// notSent reports whether a failed command never reached the server (it
// could not connect), as opposed to one whose outcome is unknown.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isAuthError(err error) bool {
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg := re.Error()
		return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") || strings.Contains(msg, "invalid password")
	}
	return false
}

// isOOM reports an error reply for a write refused by maxmemory.
func isOOM(err error) bool {
	re, ok := rueidis.IsRedisErr(err)
	return ok && strings.HasPrefix(re.Error(), "OOM")
}

// unavailable wraps err as storage.ErrUnavailable, saying which server.
func (s *Store) unavailable(err error) error {
	return fmt.Errorf("%w: redis at %s: %w", storage.ErrUnavailable, s.addr, err)
}

// Persistence is what a Redis server's settings make of an acknowledged
// message; see docs/REDIS.md.
type Persistence struct {
	AppendOnly  bool   // appendonly yes
	AppendFsync string // always, everysec or no (with AppendOnly)
	Save        string // the RDB snapshot schedule; "" for none
	// Unknown says why the settings could not be read (CONFIG GET may be
	// disabled, as on some managed services); the fields are then empty.
	Unknown string
}

// String summarises the settings, as topic describe shows them.
func (p Persistence) String() string {
	switch {
	case p.Unknown != "":
		return "unknown (" + p.Unknown + ")"
	case p.AppendOnly:
		return "aof appendfsync=" + p.AppendFsync
	case p.Save != "":
		return "rdb snapshots only (save " + p.Save + ")"
	}
	return "none"
}

// Persistence returns the server's persistence settings, as of the last
// probe.
func (s *Store) Persistence() Persistence {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.persist
}

func (s *Store) readPersistence(ctx context.Context) Persistence {
	cmds := make(rueidis.Commands, 0, 3)
	for _, name := range []string{"appendonly", "appendfsync", "save"} {
		cmds = append(cmds, s.client.B().ConfigGet().Parameter(name).Build())
	}
	var p Persistence
	for i, res := range s.client.DoMulti(ctx, cmds...) {
		kv, err := res.AsStrMap()
		if err != nil {
			return Persistence{Unknown: "CONFIG GET: " + err.Error()}
		}
		switch i {
		case 0:
			p.AppendOnly = kv["appendonly"] == "yes"
		case 1:
			p.AppendFsync = kv["appendfsync"]
		case 2:
			p.Save = kv["save"]
		}
	}
	return p
}
