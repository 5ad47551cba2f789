// Command jslat measures NATS JetStream's end-to-end latency the way
// `ratatoskr loadtest --rate R --subscribers 1` measures Ratatoskr's: one
// producer publishes 128 B messages to a stream at a fixed rate (async
// publish, acks awaited in the background), one ordered push consumer
// receives them, and each message's latency is receive time minus the send
// time it carries. It is its own module so the broker does not depend on
// nats.go.
//
//	go run . -server nats://127.0.0.1:17431 -replicas 3 -rate 10000 -duration 10s
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	server := flag.String("server", nats.DefaultURL, "NATS URL(s), comma-separated")
	replicas := flag.Int("replicas", 3, "stream replicas")
	rate := flag.Int("rate", 10000, "messages per second")
	dur := flag.Duration("duration", 10*time.Second, "run length")
	size := flag.Int("size", 128, "payload bytes (at least 8)")
	flag.Parse()
	nc, err := nats.Connect(*server)
	check(err)
	defer nc.Close()
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(4096))
	check(err)
	_ = js.DeleteStream("JSLAT")
	_, err = js.AddStream(&nats.StreamConfig{Name: "JSLAT", Subjects: []string{"jslat.>"}, Replicas: *replicas,
		Storage: nats.FileStorage})
	check(err)
	defer func() { _ = js.DeleteStream("JSLAT") }()
	start := time.Now()
	var mu sync.Mutex
	var lats []time.Duration
	got := 0
	sub, err := js.Subscribe("jslat.x", func(m *nats.Msg) {
		sent := time.Duration(binary.BigEndian.Uint64(m.Data))
		mu.Lock()
		lats = append(lats, time.Since(start)-sent)
		got++
		mu.Unlock()
	}, nats.OrderedConsumer())
	check(err)
	defer func() { _ = sub.Unsubscribe() }()
	payload := make([]byte, *size)
	interval := time.Second / time.Duration(*rate)
	n := int(dur.Seconds() * float64(*rate))
	next := time.Now()
	for i := range n {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		binary.BigEndian.PutUint64(payload, uint64(time.Since(start)))
		if _, err := js.PublishAsync("jslat.x", payload); err != nil {
			check(fmt.Errorf("publish %d: %w", i, err))
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		check(fmt.Errorf("acks still pending after 30s"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := got >= n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	q := func(p float64) time.Duration { return lats[int(p*float64(len(lats)-1))].Round(10 * time.Microsecond) }
	fmt.Printf("JetStream R%d, %d msg/s, %d B: received %d of %d; latency p50 %v p90 %v p99 %v p99.9 %v max %v\n",
		*replicas, *rate, *size, got, n, q(.5), q(.9), q(.99), q(.999), lats[len(lats)-1].Round(10*time.Microsecond))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "jslat:", err)
		os.Exit(1)
	}
}
