package ring

import (
	"runtime"
	"sync"
	"testing"
)

// The benchmarks move b.N items from producer goroutines to one consumer
// (the benchmark goroutine), so ns/op is the cost per item handed over.
// Items are pointers, like the publish-batch references the broker queues.
// A producer that finds the queue full yields; a consumer that finds it
// empty yields too (the ring) or blocks (the channel).

const benchCap = 1024

var benchItem = new(int)

// runProducers starts n producers that together push b.N items with push.
func runProducers(b *testing.B, n int, push func(count int)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for p := range n {
		count := b.N / n
		if p == 0 {
			count += b.N % n
		}
		wg.Go(func() { push(count) })
	}
	return &wg
}

// pushEach pushes count items one at a time.
func pushEach(q *MPSC[*int], count int) {
	for range count {
		for !q.Push(benchItem) {
			runtime.Gosched()
		}
	}
}

// pushBatches pushes count items in batches of len(batch).
func pushBatches(q *MPSC[*int], count int, batch []*int) {
	for count > 0 {
		n := q.PushBatch(batch[:min(len(batch), count)])
		if n == 0 {
			runtime.Gosched()
		}
		count -= n
	}
}

// popEach pops total items one at a time.
func popEach(q *MPSC[*int], total int) {
	for i := 0; i < total; {
		if _, ok := q.Pop(); ok {
			i++
		} else {
			runtime.Gosched()
		}
	}
}

// popBatches pops total items in batches of up to len(dst).
func popBatches(q *MPSC[*int], total int, dst []*int) {
	for i := 0; i < total; {
		n := q.PopBatch(dst)
		if n == 0 {
			runtime.Gosched()
		}
		i += n
	}
}

func batchOf(n int) []*int {
	s := make([]*int, n)
	for i := range s {
		s[i] = benchItem
	}
	return s
}

func BenchmarkMPSC(b *testing.B) {
	for _, producers := range []int{1, 2} {
		b.Run(producersName(producers), func(b *testing.B) {
			q := NewMPSC[*int](benchCap)
			b.ReportAllocs()
			b.ResetTimer()
			wg := runProducers(b, producers, func(n int) { pushEach(q, n) })
			popEach(q, b.N)
			wg.Wait()
		})
	}
}

func BenchmarkMPSCBatch64(b *testing.B) {
	for _, producers := range []int{1, 2} {
		b.Run(producersName(producers), func(b *testing.B) {
			q := NewMPSC[*int](benchCap)
			b.ReportAllocs()
			b.ResetTimer()
			wg := runProducers(b, producers, func(n int) { pushBatches(q, n, batchOf(64)) })
			popBatches(q, b.N, make([]*int, 64))
			wg.Wait()
		})
	}
}

// BenchmarkChan is the same workload on a buffered channel, for comparison.
func BenchmarkChan(b *testing.B) {
	for _, producers := range []int{1, 2} {
		b.Run(producersName(producers), func(b *testing.B) {
			ch := make(chan *int, benchCap)
			b.ReportAllocs()
			b.ResetTimer()
			wg := runProducers(b, producers, func(n int) {
				for range n {
					ch <- benchItem
				}
			})
			for range b.N {
				<-ch
			}
			wg.Wait()
		})
	}
}

func producersName(n int) string {
	return "producers=" + string(rune('0'+n))
}
