package ring

import "testing"

func mustPop[T comparable](t *testing.T, q *MPSC[T], want T) {
	t.Helper()
	got, ok := q.Pop()
	if !ok || got != want {
		t.Fatalf("Pop() = %v, %v; want %v, true", got, ok, want)
	}
}

func mustBeEmpty[T any](t *testing.T, q *MPSC[T]) {
	t.Helper()
	if v, ok := q.Pop(); ok {
		t.Fatalf("Pop() on empty queue = %v, true", v)
	}
	if n := q.PopBatch(make([]T, 4)); n != 0 {
		t.Fatalf("PopBatch on empty queue = %d", n)
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len() on empty queue = %d", n)
	}
}

func seq(from, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = from + i
	}
	return s
}

func TestCapacityRounding(t *testing.T) {
	cases := []struct{ in, want int }{
		{1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {1000, 1024}, {1024, 1024}, {1025, 2048},
	}
	for _, c := range cases {
		if got := NewMPSC[int](c.in).Cap(); got != c.want {
			t.Errorf("capacity %d: Cap() = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestNewPanicsOnNonPositiveCapacity(t *testing.T) {
	for _, c := range []int{0, -1, -1 << 40} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("capacity %d: no panic", c)
				}
			}()
			NewMPSC[int](c)
		}()
	}
}

func TestFIFOFullEmpty(t *testing.T) {
	q := NewMPSC[int](8)
	mustBeEmpty(t, q)
	for i := range 8 {
		if !q.Push(i) {
			t.Fatalf("Push(%d) = false before full", i)
		}
	}
	if q.Push(8) {
		t.Fatal("Push on full queue = true")
	}
	if n := q.PushBatch([]int{8, 9}); n != 0 {
		t.Fatalf("PushBatch on full queue = %d", n)
	}
	if n := q.Len(); n != 8 {
		t.Fatalf("Len() = %d, want 8", n)
	}
	for i := range 8 {
		mustPop(t, q, i)
	}
	mustBeEmpty(t, q)
}

func TestWraparound(t *testing.T) {
	q := NewMPSC[int](4)
	next, want := 0, 0
	// Three items per round on four slots moves the wrap point through
	// every offset, for single and batch operations alike.
	for round := range 1000 {
		if round%2 == 0 {
			if n := q.PushBatch(seq(next, 3)); n != 3 {
				t.Fatalf("round %d: PushBatch = %d", round, n)
			}
			next += 3
		} else {
			for range 3 {
				if !q.Push(next) {
					t.Fatalf("round %d: Push = false", round)
				}
				next++
			}
		}
		if round%3 == 0 {
			dst := make([]int, 8)
			if n := q.PopBatch(dst); n != 3 {
				t.Fatalf("round %d: PopBatch = %d", round, n)
			}
			for _, v := range dst[:3] {
				if v != want {
					t.Fatalf("round %d: got %d, want %d", round, v, want)
				}
				want++
			}
		} else {
			for range 3 {
				mustPop(t, q, want)
				want++
			}
		}
	}
	mustBeEmpty(t, q)
}

func TestPushBatchPartial(t *testing.T) {
	q := NewMPSC[int](8)
	if n := q.PushBatch(nil); n != 0 {
		t.Fatalf("PushBatch(nil) = %d", n)
	}
	if n := q.PushBatch(seq(0, 5)); n != 5 {
		t.Fatalf("PushBatch(5) = %d", n)
	}
	if n := q.PushBatch(seq(5, 10)); n != 3 {
		t.Fatalf("PushBatch(10) with 3 free = %d, want 3", n)
	}
	dst := make([]int, 3)
	if n := q.PopBatch(dst); n != 3 || dst[0] != 0 || dst[2] != 2 {
		t.Fatalf("PopBatch(3) = %d %v", n, dst)
	}
	if n := q.PopBatch(nil); n != 0 {
		t.Fatalf("PopBatch(nil) = %d", n)
	}
	// The rejected suffix is retried, as an event loop would.
	if n := q.PushBatch(seq(8, 7)); n != 3 {
		t.Fatalf("PushBatch(7) with 3 free = %d, want 3", n)
	}
	dst = make([]int, 100)
	n := q.PopBatch(dst)
	if n != 8 {
		t.Fatalf("PopBatch(100) = %d, want 8", n)
	}
	for i, v := range dst[:n] {
		if v != 3+i {
			t.Fatalf("dst[%d] = %d, want %d", i, v, 3+i)
		}
	}
	mustBeEmpty(t, q)
}

func TestBatchLargerThanCapacity(t *testing.T) {
	q := NewMPSC[int](4)
	if n := q.PushBatch(seq(0, 100)); n != 4 {
		t.Fatalf("PushBatch(100) on empty cap-4 queue = %d", n)
	}
	dst := make([]int, 100)
	if n := q.PopBatch(dst); n != 4 || dst[3] != 3 {
		t.Fatalf("PopBatch = %d %v", n, dst[:4])
	}
}

// slotsAllNil inspects the ring's storage directly: a popped value must not
// stay reachable from the queue.
func slotsAllNil(q *MPSC[*int]) bool {
	for i := range q.slots {
		if q.slots[i].val != nil {
			return false
		}
	}
	return true
}

func TestPoppedSlotsAreZeroed(t *testing.T) {
	q := NewMPSC[*int](8)
	ptrs := make([]*int, 8)
	for i := range ptrs {
		ptrs[i] = new(int)
		*ptrs[i] = i
	}
	// Offset by 3 so the batch below wraps around the end of the ring.
	q.PushBatch(ptrs[:3])
	for range 3 {
		q.Pop()
	}
	if !slotsAllNil(q) {
		t.Fatal("Pop left a reference in its slot")
	}
	if n := q.PushBatch(ptrs); n != 8 {
		t.Fatalf("PushBatch = %d", n)
	}
	p, _ := q.Pop()
	if p != ptrs[0] {
		t.Fatalf("Pop = %p, want %p", p, ptrs[0])
	}
	dst := make([]*int, 8)
	if n := q.PopBatch(dst); n != 7 || *dst[6] != 7 {
		t.Fatalf("PopBatch = %d", n)
	}
	if !slotsAllNil(q) {
		t.Fatal("PopBatch left references in its slots")
	}
}

func TestLen(t *testing.T) {
	q := NewMPSC[int](16)
	q.PushBatch(seq(0, 10))
	q.Pop()
	if n := q.Len(); n != 9 {
		t.Fatalf("Len() = %d, want 9", n)
	}
}

// An MPSC producer that has claimed a slot but not written it must hold
// back everything behind it, even values already published.
func TestMPSCStopsAtUnpublishedSlot(t *testing.T) {
	q := NewMPSC[int](8)
	q.Push(1)
	pos, n := q.claim(1)
	if n != 1 {
		t.Fatalf("claim = %d", n)
	}
	if n := q.PushBatch([]int{3, 4}); n != 2 {
		t.Fatalf("PushBatch = %d", n)
	}
	dst := make([]int, 8)
	if n := q.PopBatch(dst); n != 1 || dst[0] != 1 {
		t.Fatalf("PopBatch = %d %v, want just 1", n, dst[:n])
	}
	if v, ok := q.Pop(); ok {
		t.Fatalf("Pop past an unpublished slot = %d", v)
	}
	if n := q.Len(); n != 3 {
		t.Fatalf("Len() = %d, want 3 (the claimed slot counts)", n)
	}
	q.publish(pos, 2)
	if n := q.PopBatch(dst); n != 3 || dst[0] != 2 || dst[1] != 3 || dst[2] != 4 {
		t.Fatalf("PopBatch = %d %v, want [2 3 4]", n, dst[:n])
	}
}

func TestNoAllocations(t *testing.T) {
	q := NewMPSC[*int](64)
	v := new(int)
	batch := []*int{v, v, v, v}
	dst := make([]*int, 4)
	allocs := testing.AllocsPerRun(100, func() {
		q.Push(v)
		q.Pop()
		q.PushBatch(batch)
		q.PopBatch(dst)
	})
	if allocs != 0 {
		t.Fatalf("allocations per run = %v, want 0", allocs)
	}
}
