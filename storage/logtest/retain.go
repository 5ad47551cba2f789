package logtest

import (
	"fmt"
	"slices"
	"time"
)

// retainRule is Retain's rule applied to the model's batches: which may go.
type retainRule struct {
	hs       []held
	from     []int64 // from[i]: the bytes of hs[i:]
	cutoff   int64   // batches whose max timestamp is below it are old
	maxAge   time.Duration
	maxBytes int64
}

func newRetainRule(hs []held, now int64, maxAge time.Duration, maxBytes int64) retainRule {
	r := retainRule{hs: hs, from: make([]int64, len(hs)+1), cutoff: now - int64(maxAge), maxAge: maxAge,
		maxBytes: maxBytes}
	for i := len(hs) - 1; i >= 0; i-- {
		r.from[i] = r.from[i+1] + hs[i].size
	}
	return r
}

// old reports whether batch i is older than maxAge.
func (r retainRule) old(i int) bool { return r.maxAge > 0 && r.hs[i].b.MaxTimestamp() < r.cutoff }

// over reports whether batch i begins more than maxBytes-slack from the end.
func (r retainRule) over(i int, slack int64) bool {
	return r.maxBytes > 0 && r.from[i] > r.maxBytes-slack
}

// exact returns how many batches the exact rule removes: the eligible ones
// from the start, never the last.
func (r retainRule) exact() int {
	n := 0
	for n < len(r.hs)-1 && (r.old(n) || r.over(n, 0)) {
		n++
	}
	return n
}

// check returns why removing the first n batches breaks the rule, to
// within unit bytes (0: exactly), or "".
func (r retainRule) check(n int, unit int64) string {
	e := r.exact()
	switch {
	case len(r.hs) > 0 && n >= len(r.hs):
		return "it removed the last batch"
	case unit == 0 && n != e:
		return fmt.Sprintf("it removed %d batches, the exact rule %d", n, e)
	}
	for i := range n {
		if !r.old(i) && !r.over(i, unit) {
			return fmt.Sprintf("it removed the batch at %d (max timestamp %s, %d bytes from the end), which is "+
				"neither old nor beyond the bound (by more than the %d-byte unit)", r.hs[i].base(),
				fromT0(r.hs[i].b.MaxTimestamp()), r.from[i], unit)
		}
	}
	if r.from[n] > r.from[e]+unit {
		return fmt.Sprintf("it kept %d bytes from offset %d, where the exact rule keeps %d from offset %d: more than "+
			"one %d-byte unit over", r.from[n], r.hs[n].base(), r.from[e], r.hs[e].base(), unit)
	}
	return ""
}

// retain runs a retention pass at now (Unix nanoseconds) and checks what
// it removed against the rule (see Impl.ExactRetention), and that the
// log's Buf references to the removed batches are gone; the model then
// starts where the log does.
func (e *env) retain(now int64, maxAge time.Duration, maxBytes int64) {
	e.t.Helper()
	removed, err := e.log.Retain(time.Unix(0, now), maxAge, maxBytes)
	what := fmt.Sprintf("Retain(now %s, maxAge %v, maxBytes %d) of [%d, %d), %d bytes", fromT0(now), maxAge,
		maxBytes, e.m.start, e.m.end, e.m.bytes())
	e.no(err, what)
	start, end := e.log.Bounds()
	if end != e.m.visible {
		e.fatalf("%s: the visible end moved from %d to %d", what, e.m.visible, end)
	}
	n := slices.IndexFunc(e.m.batches, func(h held) bool { return h.base() == start })
	switch {
	case start == e.m.start:
		n = 0
	case n < 0:
		e.fatalf("%s: the log starts at %d, not at a batch it held (%v)", what, start, heldBases(e.m.batches))
	}
	unit := e.impl.RetentionUnit
	if e.impl.ExactRetention {
		unit = 0
	}
	rule := newRetainRule(e.m.batches, now, maxAge, maxBytes)
	if why := rule.check(n, unit); why != "" {
		e.fatalf("%s: %s (batches' max timestamps from t0: %v)", what, why, e.maxTimestamps())
	}
	if (removed > 0) != (n > 0) {
		e.fatalf("%s: reported %d removed, and removed %d batches", what, removed, n)
	}
	gone := e.m.batches[:n]
	e.released(gone)
	e.m.gone = append(e.m.gone, gone...)
	e.m.batches = slices.Clone(e.m.batches[n:])
	e.m.start = start
}
