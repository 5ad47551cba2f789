package auth

import (
	"net"
	"sync"
	"time"
)

// FailLimiter rate-limits failed authentications per source address: each
// address has a bucket of Burst attempts that refills at one per Every;
// an attempt takes one when it starts and gives it back when it succeeds.
// While the bucket is empty, that address's attempts are refused before
// their credentials are looked at, so guessing passwords costs the guesser
// time, however many it tries at once.
type FailLimiter struct {
	Burst int
	Every time.Duration

	mu      sync.Mutex
	buckets map[string]*failBucket
	swept   time.Time
}

type failBucket struct {
	tokens float64
	at     time.Time
}

// NewFailLimiter allows burst failures per address, then one per every.
func NewFailLimiter(burst int, every time.Duration) *FailLimiter {
	return &FailLimiter{Burst: burst, Every: every, buckets: map[string]*failBucket{}}
}

// host is the address without its port: a client gets a new port per
// connection.
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func (l *FailLimiter) refill(b *failBucket, now time.Time) {
	b.tokens = min(float64(l.Burst), b.tokens+float64(now.Sub(b.at))/float64(l.Every))
	b.at = now
}

// Begin takes one attempt from addr's budget before its credentials are
// checked, so that attempts running at once cannot outnumber the budget;
// it reports whether there was one, and if not, how long until there is.
// A success gives it back (Succeeded); a failure keeps it spent.
func (l *FailLimiter) Begin(addr string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := host(addr)
	b := l.buckets[h]
	if b == nil {
		b = &failBucket{tokens: float64(l.Burst), at: now}
		l.buckets[h] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.Every))
	}
	b.tokens--
	l.sweep(now)
	return true, 0
}

// Succeeded gives back the attempt Begin took for a login that worked.
func (l *FailLimiter) Succeeded(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[host(addr)]; b != nil {
		l.refill(b, now)
		b.tokens = min(float64(l.Burst), b.tokens+1)
	}
}

// sweep forgets, once a minute, the addresses whose budget is whole
// again; l.mu held.
func (l *FailLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if l.refill(b, now); b.tokens >= float64(l.Burst) {
			delete(l.buckets, k)
		}
	}
}

// Len is how many addresses have failures on record.
func (l *FailLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
