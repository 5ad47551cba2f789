//go:build unix

package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// The producer's per-message cost: PublishAsync and PublishBatchAsync of
// 100-byte messages into the shared in-process broker, as a high-rate
// producer (loadtest's unpaced and paced modes) calls them. One op is one
// message. ns/op is wall time per message on the publishing goroutine;
// cpu-ns/msg is the whole process's CPU per message, broker included, as
// are allocs/op (the test binary holds both): the client's own share is in
// a profile (docs/PERFORMANCE.md, "Issue 13: the producer's per-message
// cost").

const benchValueSize = 100

// benchBurst is how many messages a PublishBatchAsync call carries.
const benchBurst = 100

// benchTopics numbers the benchmarks' topics, so that every run of a
// sub-benchmark (the testing package runs each several times) starts with
// an empty topic of its own.
var benchTopics atomic.Int64

func BenchmarkPublishAsync(b *testing.B) {
	for _, idem := range []bool{true, false} {
		for _, keyed := range []bool{false, true} {
			name := fmt.Sprintf("idempotent=%t/key=%t", idem, keyed)
			b.Run(name, func(b *testing.B) { benchPublish(b, idem, keyed, 1) })
		}
	}
}

func BenchmarkPublishBatchAsync(b *testing.B) {
	for _, idem := range []bool{true, false} {
		name := fmt.Sprintf("idempotent=%t/burst=%d", idem, benchBurst)
		b.Run(name, func(b *testing.B) { benchPublish(b, idem, false, benchBurst) })
	}
}

// benchPublish measures publishing into the in-process broker (runPublishes).
func benchPublish(b *testing.B, idem, keyed bool, burst int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := []client.Option{client.WithErrorHandler(func(err error) { b.Error(err) })}
	if !idem {
		opts = append(opts, client.WithoutIdempotence())
	}
	c, err := client.Dial(ctx, brokerAddr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	topic := fmt.Sprintf("bench-publish-%d", benchTopics.Add(1))
	cfg := client.TopicConfig{Partitions: 4, Storage: "memory", RetentionBytes: 4 << 20}
	if err := c.CreateTopic(ctx, topic, cfg); err != nil {
		b.Fatal(err)
	}
	runPublishes(b, ctx, c, topic, benchMessages(burst, keyed), burst)
}

// benchMessages is a burst of 100-byte messages, keyed or not. Keys (and
// so partitions) vary across the burst, as an application's do.
func benchMessages(n int, keyed bool) []client.Message {
	if n < 64 {
		n = 64 // PublishAsync cycles through them
	}
	msgs := make([]client.Message, n)
	for i := range msgs {
		v := make([]byte, benchValueSize)
		for j := range v {
			v[j] = byte('a' + (i+j)%26)
		}
		msgs[i].Value = v
		if keyed {
			msgs[i].Key = fmt.Appendf(nil, "user-%04d", i)
		}
	}
	return msgs
}

// reportPerMessage reports the cost per message. With bursts an op is a
// call of PublishBatchAsync, so ns/op and allocs/op are per burst, and
// ns/msg and allocs/msg are what compare with PublishAsync.
func reportPerMessage(b *testing.B, msgs int, wall, cpu time.Duration, allocs uint64) {
	if msgs == 0 {
		return
	}
	b.ReportMetric(float64(wall.Nanoseconds())/float64(msgs), "ns/msg")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(msgs), "cpu-ns/msg")
	b.ReportMetric(float64(allocs)/float64(msgs), "allocs/msg")
	b.ReportMetric(float64(msgs)/wall.Seconds(), "msg/s")
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The client's own per-message cost: the same publishes into a sink, a
// stand-in broker in a child process that acknowledges every batch without
// storing it, so the benchmark process's CPU is the client's alone
// (startSink).
func BenchmarkProducerCPU(b *testing.B) {
	for _, idem := range []bool{false, true} {
		for _, keyed := range []bool{false, true} {
			name := fmt.Sprintf("PublishAsync/idempotent=%t/key=%t", idem, keyed)
			b.Run(name, func(b *testing.B) { benchSink(b, idem, keyed, 1) })
		}
		for _, keyed := range []bool{false, true} {
			name := fmt.Sprintf("PublishBatchAsync/idempotent=%t/key=%t/burst=%d", idem, keyed, benchBurst)
			b.Run(name, func(b *testing.B) { benchSink(b, idem, keyed, benchBurst) })
		}
	}
}

func benchSink(b *testing.B, idem, keyed bool, burst int) {
	addr := startSink(b, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := []client.Option{client.WithErrorHandler(func(err error) { b.Error(err) }), client.WithoutReconnect()}
	if idem {
		opts = append(opts, client.WithIdempotence())
	}
	c, err := client.Dial(ctx, addr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	runPublishes(b, ctx, c, "sink", benchMessages(burst, keyed), burst)
}

// runPublishes publishes b.N messages (burst 1, with PublishAsync) or
// bursts (PublishBatchAsync) to topic, then flushes: the flush is in the
// time, so what is measured is messages acked, not queued. A first
// message looks up the partition count and, when idempotent, the sticky
// partition outside the measurement. It reports the cost per message.
func runPublishes(b *testing.B, ctx context.Context, c *client.Client, topic string, msgs []client.Message, burst int) {
	if err := c.PublishAsync(ctx, topic, msgs[0]); err != nil {
		b.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(benchValueSize * burst))
	var mem0, mem1 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	cpu0 := processCPU()
	start := time.Now()
	n := 0
	var err error
	for b.Loop() {
		if burst == 1 {
			err = c.PublishAsync(ctx, topic, msgs[n%len(msgs)])
		} else {
			err = c.PublishBatchAsync(ctx, topic, msgs)
		}
		if err != nil {
			b.Fatal(err)
		}
		n++
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	wall, cpu := time.Since(start), processCPU()-cpu0
	runtime.ReadMemStats(&mem1)
	reportPerMessage(b, n*burst, wall, cpu, mem1.Mallocs-mem0.Mallocs)
}
