package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/redislog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Topics created with storage=redis keep their partitions' logs in the
// Redis server of Config.RedisURL (package redislog; docs/REDIS.md). The
// broker connects at Start, waiting for the server as long as Start's
// context allows, and keeps one connection set for all such topics.

// redisStorage is the storage value of topics kept in Redis.
const redisStorage = "redis"

// redisConfig builds the store's configuration from the broker's.
func (c *Config) redisConfig() (redislog.Config, error) {
	rc := redislog.Config{URL: c.RedisURL, Prefix: c.RedisPrefix, Timeout: c.RedisTimeout, Logger: c.Logger}
	if c.RedisPassword != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil {
			return rc, fmt.Errorf("redis URL: %w", err)
		}
		user := ""
		if u.User != nil {
			user = u.User.Username()
		}
		u.User = url.UserPassword(user, c.RedisPassword)
		rc.URL = u.String()
	}
	if c.RedisTLSCAFile == "" && c.RedisTLSCertFile == "" {
		return rc, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if u, err := url.Parse(c.RedisURL); err == nil {
		tc.ServerName = u.Hostname()
	}
	if c.RedisTLSCAFile != "" {
		pem, err := os.ReadFile(c.RedisTLSCAFile)
		if err != nil {
			return rc, fmt.Errorf("redis TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return rc, fmt.Errorf("redis TLS CA: %s holds no PEM certificate", c.RedisTLSCAFile)
		}
		tc.RootCAs = pool
	}
	if c.RedisTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.RedisTLSCertFile, c.RedisTLSKeyFile)
		if err != nil {
			return rc, fmt.Errorf("redis TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	rc.TLS = tc
	return rc, nil
}

// openRedis connects to the Redis server when one is configured.
func (e *Engine) openRedis(ctx context.Context) error {
	if e.cfg.RedisURL == "" {
		return nil
	}
	rc, err := e.cfg.redisConfig()
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	s, err := redislog.Open(ctx, rc)
	if err != nil {
		return fmt.Errorf("engine: %w (topics with storage=redis keep their logs there; start it, or fix --redis-url)", err)
	}
	e.redis, e.topics.redis = s, s
	e.log.Info("redis connected", "redis", s.Addr(), "persistence", s.Persistence().String())
	return nil
}

// closeRedis closes the Redis connections, after the logs kept there.
func (e *Engine) closeRedis() {
	if e.redis != nil {
		e.redis.Close()
	}
}

// openRedisLog opens a partition's log in Redis; create says the topic is
// new (keys left under its name are then refused, not adopted).
func (r *registry) openRedisLog(topic string, partition int, create bool) (storage.Log, error) {
	if r.redis == nil {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "storage=redis needs the broker to have a Redis server (serve --redis-url)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*r.cfg.RedisTimeout)
	defer cancel()
	l, err := r.redis.OpenLog(ctx, topic, partition, create)
	if errors.Is(err, storage.ErrUnavailable) {
		return nil, wire.Errorf(wire.CodeStorageUnavailable, err.Error())
	}
	return l, err
}

// Dependency is a server the broker depends on, in the health report.
type Dependency = httpapi.Dependency

// Dependencies lists the servers the broker depends on and whether each
// answers.
func (e *Engine) Dependencies() []Dependency {
	if e.redis == nil {
		return nil
	}
	d := Dependency{Name: "redis", Addr: e.redis.Addr(), Up: true, Persistence: e.redis.Persistence().String()}
	if err := e.redis.Health(); err != nil {
		d.Up, d.Error = false, err.Error()
	}
	return []Dependency{d}
}

// defaultRedisTimeout bounds each Redis operation unless configured.
const defaultRedisTimeout = 5 * time.Second
