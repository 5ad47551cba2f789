// Command latprobe measures a broker's publish-to-delivery latency with as
// little of the measuring tool in it as possible, to check what
// `ratatoskr loadtest` reports. One connection publishes paced bursts
// with PublishAsync, each message stamped with the time it is handed to
// the client (its actual send time, not an intended one); another
// subscribes with DispatchInline and records receive time minus that
// stamp. So a late wake-up of the probe's own sender is not counted
// (it is reported apart, as the bursts' lateness), and what is left is
// client encode → broker → client decode, plus the subscriber's wake-up.
//
//	go run ./bench/latprobe -server 127.0.0.1:7070 -rate 100000 -duration 10s
//
// It prints one line; with -json, one JSON object whose latency_us matches
// `ratatoskr loadtest --json`.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

type options struct {
	server, topic string
	rate, size    int
	duration      time.Duration
	interval      time.Duration
	json          bool
}

// summary is what a run measured, in microseconds.
type summary struct {
	Rate      int                `json:"rate"`
	Sent      uint64             `json:"sent"`
	Received  uint64             `json:"received"`
	LatencyUS map[string]float64 `json:"latency_us"`
	// LatenessUS is how late the probe's bursts left against their
	// schedule: the probe's own starvation, excluded from LatencyUS.
	LatenessUS map[string]float64 `json:"burst_lateness_us"`
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", "127.0.0.1:7070", "broker address")
	flag.StringVar(&o.topic, "topic", "latprobe", "memory topic to use (created with one partition if missing)")
	flag.IntVar(&o.rate, "rate", 100000, "messages per second")
	flag.IntVar(&o.size, "size", 128, "payload bytes (at least 8)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "publishing time")
	flag.DurationVar(&o.interval, "interval", time.Millisecond, "time between bursts")
	flag.BoolVar(&o.json, "json", false, "print the result as JSON")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "latprobe:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.rate <= 0 || o.size < 8 || o.duration <= 0 || o.interval <= 0 {
		return errors.New("need -rate > 0, -size >= 8, -duration > 0 and -interval > 0")
	}
	ctx := context.Background()
	pub, err := client.Dial(ctx, o.server, client.WithName("latprobe"))
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	sub, err := client.Dial(ctx, o.server, client.WithName("latprobe"))
	if err != nil {
		return err
	}
	defer func() { _ = sub.Close() }()
	err = pub.CreateTopic(ctx, o.topic, client.TopicConfig{Partitions: 1, Storage: "memory"})
	if err != nil && !errors.Is(err, client.ErrTopicExists) {
		return err
	}
	lat := hdrhistogram.New(1000, int64(time.Minute), 3)
	var received atomic.Uint64
	s, err := sub.Subscribe(ctx, o.topic, func(d *client.Delivery) {
		t := now()
		if len(d.Value) >= 8 {
			_ = lat.RecordValue(max(t-int64(binary.LittleEndian.Uint64(d.Value)), 1000))
		}
		received.Add(1)
	}, client.DispatchInline(), client.FromPartition(0))
	if err != nil {
		return err
	}
	sent, late, err := publish(ctx, pub, o)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); received.Load() < sent && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	_ = s.Unsubscribe(ctx)
	<-s.Done()
	return report(o, summary{Rate: o.rate, Sent: sent, Received: received.Load(),
		LatencyUS: quantiles(lat), LatenessUS: quantiles(late)})
}

// publish sends rate messages a second for the duration, in one burst
// per interval of every message due by then, each stamped just before
// PublishAsync takes it.
func publish(ctx context.Context, c *client.Client, o options) (uint64, *hdrhistogram.Histogram, error) {
	payload := make([]byte, o.size)
	late := hdrhistogram.New(1000, int64(time.Minute), 3)
	perMsg := float64(time.Second) / float64(o.rate)
	start, end := now(), now()+int64(o.duration)
	var seq uint64
	for next := start; next < end; next += int64(o.interval) {
		if d := next - now(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		_ = late.RecordValue(max(now()-next, 0))
		for due := next + int64(o.interval); start+int64(float64(seq)*perMsg) < due; seq++ {
			binary.LittleEndian.PutUint64(payload, uint64(now()))
			if err := c.PublishAsync(ctx, o.topic, client.Message{Value: payload}, client.ToPartition(0)); err != nil {
				return seq, late, err
			}
		}
	}
	return seq, late, c.Flush(ctx)
}

func quantiles(h *hdrhistogram.Histogram) map[string]float64 {
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e3 }
	return map[string]float64{"p50": q(50), "p90": q(90), "p99": q(99), "p999": q(99.9), "max": float64(h.Max()) / 1e3}
}

func report(o options, s summary) error {
	if o.json {
		return json.NewEncoder(os.Stdout).Encode(s)
	}
	l, b := s.LatencyUS, s.LatenessUS
	_, err := fmt.Printf("sent %d received %d  latency p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f µs  "+
		"burst lateness p50 %.0f p99 %.0f max %.0f µs\n",
		s.Sent, s.Received, l["p50"], l["p90"], l["p99"], l["p999"], l["max"], b["p50"], b["p99"], b["max"])
	return err
}
