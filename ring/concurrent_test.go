package ring

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// watchdog fails the test if it has not finished by d. The bound is
// deliberately generous: it catches hangs (lost wake-ups), not slowness.
func watchdog(t *testing.T, d time.Duration) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic("test did not finish in " + d.String() + "\n" + string(buf[:n]))
		}
	}()
	return func() { close(done) }
}

// pushAll pushes vs, mixing Push and PushBatch, yielding while the queue is
// full (never busy-waiting on a two-core machine).
func pushAll(q *MPSC[uint64], vs []uint64, rng *rand.Rand) {
	for len(vs) > 0 {
		var n int
		if rng.IntN(2) == 0 {
			if q.Push(vs[0]) {
				n = 1
			}
		} else {
			n = q.PushBatch(vs[:min(len(vs), 1+rng.IntN(64))])
		}
		vs = vs[n:]
		if n == 0 {
			runtime.Gosched()
		}
	}
}

// popSome pops with Pop or PopBatch and, when the queue is empty, yields to
// the producers.
func popSome(q *MPSC[uint64], dst []uint64, rng *rand.Rand) []uint64 {
	var n int
	if rng.IntN(2) == 0 {
		if v, ok := q.Pop(); ok {
			dst[0], n = v, 1
		}
	} else {
		n = q.PopBatch(dst[:1+rng.IntN(len(dst))])
	}
	if n == 0 {
		runtime.Gosched()
	}
	return dst[:n]
}

func TestMPSCConcurrentProducers(t *testing.T) {
	const producers, perProducer = 4, 100_000
	defer watchdog(t, 2*time.Minute)()
	q := NewMPSC[uint64](128)
	for p := range producers {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			vs := make([]uint64, perProducer)
			for i := range vs {
				vs[i] = uint64(p)<<32 | uint64(i)
			}
			pushAll(q, vs, rng)
		}()
	}
	rng := rand.New(rand.NewPCG(5, 6))
	dst := make([]uint64, 100)
	var next [producers]uint64
	for got := 0; got < producers*perProducer; {
		for _, v := range popSome(q, dst, rng) {
			p, i := v>>32, v&(1<<32-1)
			if p >= producers || i != next[p] {
				t.Fatalf("producer %d: got seq %d, want %d", p, i, next[p])
			}
			next[p]++
			got++
		}
	}
	mustBeEmpty(t, q)
}
