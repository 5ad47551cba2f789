package ring

import (
	"math/rand/v2"
	"runtime"
	"sync"
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
func pushAll(q queue[uint64], vs []uint64, rng *rand.Rand) {
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

// popSome pops with Pop or PopBatch and, when the queue is empty, waits.
func popSome(q queue[uint64], dst []uint64, rng *rand.Rand) []uint64 {
	var n int
	if rng.IntN(2) == 0 {
		if v, ok := q.Pop(); ok {
			dst[0], n = v, 1
		}
	} else {
		n = q.PopBatch(dst[:1+rng.IntN(len(dst))])
	}
	if n == 0 {
		q.Wait(time.Second)
	}
	return dst[:n]
}

func TestSPSCConcurrentInOrder(t *testing.T) {
	const total = 1_000_000
	defer watchdog(t, 2*time.Minute)()
	q := NewSPSC[uint64](64)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]uint64, 64)
		for next := uint64(0); next < total; {
			k := min(uint64(len(buf)), total-next)
			for i := range k {
				buf[i] = next + i
			}
			pushAll(q, buf[:k], rng)
			next += k
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	dst := make([]uint64, 100)
	for want := uint64(0); want < total; {
		for _, v := range popSome(q, dst, rng) {
			if v != want {
				t.Fatalf("got %d, want %d", v, want)
			}
			want++
		}
	}
	mustBeEmpty(t, queue[uint64](q))
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
	mustBeEmpty(t, queue[uint64](q))
}

// TestParkWakeStress makes the consumer park over and over: producers pause
// at random, far longer than Wait's spin phase. Wait's timeout is much
// longer than any pause, so a Wait that times out while items are still
// due means a wake-up was lost.
func TestParkWakeStress(t *testing.T) {
	for _, c := range []struct {
		name      string
		producers int
		newQ      func(int) queue[uint64]
	}{
		{"SPSC", 1, func(n int) queue[uint64] { return NewSPSC[uint64](n) }},
		{"MPSC", 3, func(n int) queue[uint64] { return NewMPSC[uint64](n) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer watchdog(t, time.Minute)()
			parkWakeStress(t, c.newQ(16), c.producers, 1500)
		})
	}
}

func parkWakeStress(t *testing.T, q queue[uint64], producers, perProducer int) {
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 99))
			for i := range perProducer {
				if rng.IntN(3) == 0 {
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				}
				pushAll(q, []uint64{uint64(p)<<32 | uint64(i)}, rng)
			}
		})
	}
	next := make([]uint64, producers)
	dst := make([]uint64, 8)
	for got := 0; got < producers*perProducer; {
		n := q.PopBatch(dst)
		if n == 0 && !q.Wait(10*time.Second) {
			t.Fatalf("Wait timed out with %d items still due: lost wake-up", producers*perProducer-got)
		}
		for _, v := range dst[:n] {
			p, i := v>>32, v&(1<<32-1)
			if i != next[p] {
				t.Fatalf("producer %d: got seq %d, want %d", p, i, next[p])
			}
			next[p]++
			got++
		}
	}
	wg.Wait()
	mustBeEmpty(t, q)
}
