package ring

import (
	"testing"
	"time"
)

// sleeping reports whether the consumer has announced that it is parking.
func sleeping(q any) bool {
	switch q := q.(type) {
	case *SPSC[int]:
		return q.park.sleeping.Load() != 0
	case *MPSC[int]:
		return q.park.sleeping.Load() != 0
	}
	panic("unknown queue type")
}

// waitUntilParked polls until the consumer is parked (or about to be),
// so the following wake-up exercises the blocking path.
func waitUntilParked(t *testing.T, q queue[int]) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !sleeping(q) {
		if time.Now().After(deadline) {
			t.Fatal("consumer never parked")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// waitResult runs Wait on a consumer goroutine and returns its result.
func waitResult(q queue[int], timeout time.Duration) <-chan bool {
	res := make(chan bool, 1)
	go func() { res <- q.Wait(timeout) }()
	return res
}

func receive(t *testing.T, res <-chan bool) bool {
	t.Helper()
	select {
	case ok := <-res:
		return ok
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
		return false
	}
}

func TestWaitTimeout(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		q := newQ(4)
		for range 2 { // twice: the second park reuses the timer
			start := time.Now()
			if q.Wait(30 * time.Millisecond) {
				t.Fatal("Wait on empty queue = true")
			}
			if d := time.Since(start); d < 25*time.Millisecond || d > 10*time.Second {
				t.Fatalf("Wait(30ms) returned after %v", d)
			}
		}
	})
}

func TestWaitReturnsAtOnceWhenNonEmpty(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		q := newQ(4)
		q.Push(1)
		if !q.Wait(0) {
			t.Fatal("Wait on non-empty queue = false")
		}
	})
}

func TestPushWakesParkedConsumer(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		for _, batch := range []bool{false, true} {
			q := newQ(4)
			res := waitResult(q, 0)
			waitUntilParked(t, q)
			if batch {
				q.PushBatch([]int{1, 2})
			} else {
				q.Push(1)
			}
			if !receive(t, res) {
				t.Fatal("Wait woken by a push = false")
			}
		}
	})
}

func TestWakeUnparks(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		q := newQ(4)
		res := waitResult(q, 0)
		waitUntilParked(t, q)
		q.Wake()
		if receive(t, res) {
			t.Fatal("Wait woken by Wake on an empty queue = true")
		}
		// The Wake was consumed: the next Wait blocks until its timeout.
		if q.Wait(time.Millisecond) {
			t.Fatal("Wait after a consumed Wake = true")
		}
	})
}

func TestWakeBeforeWaitIsRemembered(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		q := newQ(4)
		q.Wake()
		if receive(t, waitResult(q, 0)) {
			t.Fatal("Wait = true on an empty queue")
		}
	})
}

// TestWakeRacesWait fires Wake at every point of the consumer's entry into
// Wait; each Wake must make exactly that Wait return.
func TestWakeRacesWait(t *testing.T) {
	forEach(t, func(t *testing.T, newQ func(int) queue[int]) {
		q := newQ(4)
		for range 2000 {
			res := waitResult(q, 0)
			q.Wake()
			receive(t, res)
		}
	})
}

// TestParkRechecksAfterAnnouncing covers the window the ordering argument
// is about: an item published after the consumer's last check but before
// it announced "sleeping" (so its producer sent no token). park must find
// it in its re-check instead of blocking forever.
func TestParkRechecksAfterAnnouncing(t *testing.T) {
	spsc, mpsc := NewSPSC[int](4), NewMPSC[int](4)
	for _, c := range []struct {
		name string
		q    queue[int]
		p    *parker
		r    func() bool
	}{
		{"SPSC", spsc, &spsc.park, spsc.ready},
		{"MPSC", mpsc, &mpsc.park, mpsc.ready},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.q.Push(1) // consumer not parked: no token is sent
			res := make(chan bool, 1)
			go func() { res <- c.p.park(c.r, 0) }()
			if !receive(t, res) {
				t.Fatal("park = false with an item queued")
			}
		})
	}
}
