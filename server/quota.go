package server

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Tenant quotas on the network side (auth.Quotas): connections, checked
// at login; storage bytes, checked per publish batch against the tenant's
// bytes as the broker last measured them (SetTenantStorage, every second)
// plus what it published since; and publish rates, which throttle: a
// batch over the tenant's rate is stored and acknowledged like any other,
// and the connection then reads nothing more until the tenant is back
// within its rate (Kafka's quota throttling); and the delivery rate,
// which holds a connection's flushes back while the tenant is over it.
// Nothing acknowledged is dropped, and a refused batch stores nothing. Topics and partitions are
// checked where topics are created (engine).
//
// Every check reads atomics of the tenant's state and the session's copy
// of the quotas, refreshed when the store's generation moves: no lock, no
// map lookup per batch.

// tenantState is what the broker counts per tenant.
type tenantState struct {
	name              string
	conns             atomic.Int64
	pubBytes          atomic.Uint64
	pubMsgs           atomic.Uint64
	stored            atomic.Int64 // bytes held, as last measured plus published since
	throttled         atomic.Int64 // nanoseconds connections were held back
	delivered         atomic.Uint64
	deliveryThrottled atomic.Int64 // nanoseconds connections' deliveries were held back
	refused           [quotaKinds]atomic.Uint64
	// GCRA (the virtual-scheduling form of a token bucket): the time at
	// which the tenant's rate would be met again, in Unix nanoseconds.
	bytesTAT   atomic.Int64
	msgsTAT    atomic.Int64
	deliverTAT atomic.Int64
}

// The quotas refusals are counted by.
const (
	quotaConnections = iota
	quotaStorage
	quotaKinds
)

var quotaNames = [quotaKinds]string{"connections", "storage"}

// tenantFor returns the state of a tenant, creating it.
func (srv *Server) tenantFor(name string) *tenantState {
	if ts, ok := srv.tenants.Load(name); ok {
		return ts.(*tenantState)
	}
	ts, _ := srv.tenants.LoadOrStore(name, &tenantState{name: name})
	return ts.(*tenantState)
}

// SetTenantStorage records the bytes a tenant's partitions hold.
func (srv *Server) SetTenantStorage(tenant string, bytes int64) {
	srv.tenantFor(tenant).stored.Store(bytes)
}

// TenantCounters is what the metrics show of a tenant.
type TenantCounters struct {
	Tenant         string
	Connections    int64
	PublishedBytes uint64
	PublishedMsgs  uint64
	StoredBytes    int64
	Throttled      time.Duration
	DeliveredBytes uint64
	// DeliveryThrottled is how long deliveries were held back for the
	// tenant's delivery rate.
	DeliveryThrottled time.Duration
	Refused           map[string]uint64 // by quota
}

// Tenants reports every tenant the broker has seen.
func (srv *Server) Tenants() []TenantCounters {
	var out []TenantCounters
	srv.tenants.Range(func(_, v any) bool {
		ts := v.(*tenantState)
		c := TenantCounters{Tenant: ts.name, Connections: ts.conns.Load(), PublishedBytes: ts.pubBytes.Load(),
			PublishedMsgs: ts.pubMsgs.Load(), StoredBytes: ts.stored.Load(),
			Throttled: time.Duration(ts.throttled.Load()), Refused: map[string]uint64{},
			DeliveredBytes: ts.delivered.Load(), DeliveryThrottled: time.Duration(ts.deliveryThrottled.Load())}
		for i := range quotaKinds {
			c.Refused[quotaNames[i]] = ts.refused[i].Load()
		}
		out = append(out, c)
		return true
	})
	return out
}

// quotaState is a session's view of its tenant's quotas.
type quotaState struct {
	ts       *tenantState
	q        auth.Quotas
	counted  bool        // counted in ts.conns
	throttle *time.Timer // holds reading back while the tenant is over its rate
	// held is set while the tenant is over its delivery rate: flushes
	// wait for release, and noDirect keeps other loops from writing the
	// connection directly meanwhile (or whenever the tenant has a
	// delivery quota, since direct writes bypass the count).
	held     bool
	release  *time.Timer
	loaded   bool // q was read at least once
	noDirect atomic.Bool
}

// admitTenant counts a tenant's connection at login, refusing one over
// its connection quota.
func (s *session) admitTenant(p *auth.Principal) error {
	if p.Tenant == "" {
		return nil
	}
	ts := s.srv.tenantFor(p.Tenant)
	s.quota.ts = ts
	s.refreshQuotas()
	n := ts.conns.Add(1)
	s.quota.counted = true
	if lim := s.quota.q.Connections; lim > 0 && n > lim {
		ts.refused[quotaConnections].Add(1)
		return wire.Errorf(wire.CodeQuotaExceeded, "tenant "+p.Tenant+" has its quota of "+
			strconv.FormatInt(lim, 10)+" connections open")
	}
	return nil
}

// refreshQuotas copies the tenant's quotas from the store.
func (s *session) refreshQuotas() {
	if s.quota.ts == nil {
		return
	}
	t, _ := s.srv.cfg.Auth.Store.Tenant(s.quota.ts.name)
	old, q := s.quota.q, t.Quotas
	s.quota.q = q
	s.quota.noDirect.Store(q.DeliveryBytesPerSec > 0)
	// A changed rate starts afresh: the debt run up under the old one is
	// forgiven, and a connection held back for it is let go.
	ts := s.quota.ts
	if !s.quota.loaded { // a login: the tenant's state is others' too
		s.quota.loaded = true
		return
	}
	if q.PublishBytesPerSec != old.PublishBytesPerSec || q.PublishMsgsPerSec != old.PublishMsgsPerSec {
		ts.bytesTAT.Store(0)
		ts.msgsTAT.Store(0)
		if s.throttled && s.quota.throttle != nil && s.quota.throttle.Stop() {
			s.throttled = false
		}
	}
	if q.DeliveryBytesPerSec != old.DeliveryBytesPerSec {
		ts.deliverTAT.Store(0)
		if s.quota.held && s.quota.release != nil && s.quota.release.Stop() {
			s.quota.held = false
		}
	}
}

// releaseTenant uncounts a closed connection.
func (s *session) releaseTenant() {
	if s.quota.counted {
		s.quota.ts.conns.Add(-1)
		s.quota.counted = false
	}
	if s.quota.throttle != nil {
		s.quota.throttle.Stop()
	}
	if s.quota.release != nil {
		s.quota.release.Stop()
	}
}

// holdDelivery reports whether a flush must wait for the tenant's
// delivery rate: while an earlier flush has the tenant over it, the next
// ones wait until it is back within it (then the loop flushes again). A
// flush is written whole, so over any period a tenant gets at most its
// rate's worth, a second's burst and one flush; what waits stays in the
// outbox, where flow control and the slow-consumer bound (docs/PROTOCOL.md
// §8) apply as to any reader that is behind.
func (s *session) holdDelivery() bool {
	ts := s.quota.ts
	if ts == nil || s.quota.q.DeliveryBytesPerSec == 0 {
		return false
	}
	wait := ts.deliverTAT.Load() - time.Now().UnixNano() - int64(time.Second)
	if wait <= 0 {
		return false
	}
	wait = min(wait, int64(maxThrottle))
	ts.deliveryThrottled.Add(wait)
	s.quota.held = true
	s.quota.release = time.AfterFunc(time.Duration(wait), func() {
		s.t.onLoop(func() bool {
			s.quota.held = false // the loop's flush follows
			return false
		})
	})
	return true
}

// chargeDelivery counts what a flush wrote to a tenant's connection
// against its delivery rate.
func (s *session) chargeDelivery(iov [][]byte) {
	ts := s.quota.ts
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	if n == 0 {
		return
	}
	ts.delivered.Add(uint64(n))
	if rate := s.quota.q.DeliveryBytesPerSec; rate > 0 {
		gcra(&ts.deliverTAT, time.Now().UnixNano(), int64(n), rate)
	}
}

// checkStorage refuses a publish of n bytes while the tenant holds its
// storage quota or more.
func (s *session) checkStorage(n int) error {
	ts := s.quota.ts
	if ts == nil || s.quota.q.StorageBytes == 0 {
		return nil
	}
	if held := ts.stored.Load(); held+int64(n) > s.quota.q.StorageBytes {
		ts.refused[quotaStorage].Add(1)
		return wire.Errorf(wire.CodeQuotaExceeded, "tenant "+ts.name+" holds "+strconv.FormatInt(held, 10)+
			" bytes of its storage quota of "+strconv.FormatInt(s.quota.q.StorageBytes, 10)+"; nothing was stored")
	}
	return nil
}

// charge counts a publish the broker took and, when it puts the tenant
// over a rate quota, holds the connection's reading back until the
// tenant is within it again.
func (s *session) charge(bytes, msgs int) {
	ts := s.quota.ts
	if ts == nil {
		return
	}
	ts.pubBytes.Add(uint64(bytes))
	ts.pubMsgs.Add(uint64(msgs))
	ts.stored.Add(int64(bytes))
	q := &s.quota.q
	if q.PublishBytesPerSec == 0 && q.PublishMsgsPerSec == 0 {
		return
	}
	now := time.Now().UnixNano()
	delay := max(gcra(&ts.bytesTAT, now, int64(bytes), q.PublishBytesPerSec),
		gcra(&ts.msgsTAT, now, int64(msgs), q.PublishMsgsPerSec))
	if delay <= 0 {
		return
	}
	// One hold is short, so that a throttled connection still gets to its
	// heartbeats between holds; the debt stays and holds it again.
	delay = min(delay, int64(maxThrottle))
	ts.throttled.Add(delay)
	s.throttleFor(time.Duration(delay))
}

// maxThrottle bounds one hold of a connection's reading, maxDebt the
// time a tenant can be behind its rate (Kafka bounds its throttle time
// by its quota window likewise).
const (
	maxThrottle = 2 * time.Second
	maxDebt     = 10 * time.Second
)

// gcra charges cost against a rate (per second, with a burst of one
// second's worth) and returns how long the caller must wait for the rate
// to be met again, in nanoseconds; 0 or less when it is met. rate 0 is no
// limit.
func gcra(tat *atomic.Int64, now, cost, rate int64) int64 {
	if rate <= 0 {
		return 0
	}
	step := cost * int64(time.Second) / rate
	for {
		old := tat.Load()
		// Debt beyond maxDebt is forgiven: one huge batch against a tiny
		// rate must not stall the tenant for minutes.
		next := min(max(old, now)+step, now+int64(time.Second+maxDebt))
		if tat.CompareAndSwap(old, next) {
			return next - now - int64(time.Second) // a second's burst is free
		}
	}
}

// throttleFor stops taking frames from the connection for d; what the
// client sends meanwhile waits in the socket, bounded by the memory guard.
func (s *session) throttleFor(d time.Duration) {
	if s.throttled {
		return
	}
	s.throttled = true
	s.quota.throttle = time.AfterFunc(d, func() {
		s.t.onLoop(func() bool {
			s.throttled = false
			return false
		})
	})
}
