package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// drainer is a Flusher that empties its outbox on the spot, standing in for
// a connection's writer without the syscall.
type drainer struct {
	o     *outbox.Outbox
	bytes atomic.Int64
}

func (d *drainer) ScheduleFlush() {
	p, _ := d.o.Take()
	d.bytes.Add(int64(p.Bytes()))
	d.o.Done(p, 0)
}

func (d *drainer) Owner() any { return d }
func (d *drainer) FlushNow()  { d.ScheduleFlush() }

func newDrained(limit int) *drainer {
	d := &drainer{}
	d.o = outbox.NewOutbox(limit, 1, d)
	return d
}

// batchFrame is a Deliver frame of n 128-byte records.
func batchFrame(n int) ([]byte, int) {
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, "bench", 0)
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, -1, -1)
	v := make([]byte, 128)
	for i := range n {
		bb.Append(int64(i), nil, v, nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	return frame, off
}

// benchShard publishes 64-record batches through one shard to subs
// subscribers; ns/op is per batch, so divide by 64 for per message.
func benchShard(b *testing.B, subs int) {
	s := shard.New(shard.Config{Shards: 1})
	s.Start()
	defer s.Stop()
	p := shard.NewPartition("bench", 0, s, storage.NewMemLog(64<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	prod := newDrained(1 << 30)
	for range subs {
		d := newDrained(1 << 30)
		done := make(chan error, 1)
		_ = p.Subscribe(d.o, shard.NewJoin(1, func(err error) { done <- err }))
		s.RunInline(nil)
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	frame, off := batchFrame(64)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for b.Loop() {
		buf := storage.NewBuf(len(frame))
		copy(buf.B, frame)
		if err := p.Publish(prod.o, 1, buf, off); err != nil {
			b.Fatal(err)
		}
		s.RunInline(nil)
	}
	for p.EndOffset() < int64(b.N)*64 {
		time.Sleep(10 * time.Microsecond) // poll interval: the benchmark waits for the shard to catch up
	}
	b.ReportMetric(float64(b.N)*64/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkShardAppend(b *testing.B) { benchShard(b, 0) }

func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchShard(b, n) })
	}
}

// startEngine runs a broker with the defaults on 127.0.0.1 port 0 (no
// HTTP) until the benchmark ends.
func startEngine(b *testing.B) *engine.Engine {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", b.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Shutdown(ctx) })
	return e
}

// BenchmarkEndToEnd publishes 128-byte messages through an in-process
// broker to subscribers over loopback; ns/op is per message published.
func BenchmarkEndToEnd(b *testing.B) {
	for _, subs := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) { endToEnd(b, subs) })
	}
}

func endToEnd(b *testing.B, subs int) {
	e := startEngine(b)
	ctx := context.Background()
	var got atomic.Int64
	for range subs {
		c, err := client.Dial(ctx, e.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		if _, err := c.Subscribe(ctx, "e2e", func(*client.Delivery) { got.Add(1) }); err != nil {
			b.Fatal(err)
		}
	}
	pub, err := client.Dial(ctx, e.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	msg := client.Message{Value: make([]byte, 128), Timestamp: time.Now()}
	b.ReportAllocs()
	b.SetBytes(128)
	b.ResetTimer()
	for b.Loop() {
		if err := pub.PublishAsync(ctx, "e2e", msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	want := int64(b.N) * int64(subs)
	for got.Load() < want {
		time.Sleep(100 * time.Microsecond) // poll interval: the benchmark waits for its subscribers
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkFetch pulls from a partition that has data, over loopback
// through an in-process broker: ns/op is one Fetch round trip. "serial" is
// one client waiting for each answer; "parallel" is 8 clients at once,
// which is what the broker's reader goroutines have to keep up with.
func BenchmarkFetch(b *testing.B) {
	b.Run("serial", func(b *testing.B) { fetchBench(b, 1) })
	b.Run("parallel", func(b *testing.B) { fetchBench(b, 8) })
}

func fetchBench(b *testing.B, clients int) {
	e := startEngine(b)
	ctx := context.Background()
	cs := make(chan *client.Client, clients)
	for range clients {
		c, err := client.Dial(ctx, e.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		cs <- c
	}
	c := <-cs
	cs <- c
	const msgs = 1000
	for range msgs / 100 {
		for range 100 {
			if err := c.PublishAsync(ctx, "pull", client.Message{Value: make([]byte, 128)}); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var n atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		c := <-cs
		wg.Go(func() {
			for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
				if _, err := c.Fetch(ctx, "pull", 0, client.AtOffset(i%msgs), client.MaxBytes(4096)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// CPU time (broker and clients, user and system) is steadier than
	// ns/op on a shared machine, where waits for a CPU dominate latency.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user plus system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
