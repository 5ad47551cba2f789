package auth

import (
	"net"
	"sync"
	"time"
)

// FailLimiter rate-limits failed authentications per source address: each
// address has a bucket of Burst failures that refills at one per Every.
// While it is empty, that address's attempts are refused before their
// credentials are looked at, so guessing passwords costs the guesser time.
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

// Allow reports whether addr may try to authenticate now, and if not, how
// long until it may.
func (l *FailLimiter) Allow(addr string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[host(addr)]
	if b == nil {
		return true, 0
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.Every))
}

// Failed counts a failure from addr.
func (l *FailLimiter) Failed(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := host(addr)
	b := l.buckets[h]
	if b == nil {
		b = &failBucket{tokens: float64(l.Burst), at: now}
		l.buckets[h] = b
	}
	l.refill(b, now)
	b.tokens = max(0, b.tokens-1)
	if now.Sub(l.swept) > time.Minute { // forget addresses whose buckets are full again
		l.swept = now
		for k, b := range l.buckets {
			if l.refill(b, now); b.tokens >= float64(l.Burst) {
				delete(l.buckets, k)
			}
		}
	}
}

// Len is how many addresses have failures on record.
func (l *FailLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
