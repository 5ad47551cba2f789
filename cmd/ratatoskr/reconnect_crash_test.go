package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestKill9UnderReconnectingProducer kills the broker with SIGKILL three
// times under idempotent producers that go on publishing: each time the
// client reconnects to the restarted broker and sends again what was
// written and not acknowledged. Every acknowledged message must be in the
// log exactly once, at the offset its ack named, and no message twice.
func TestKill9UnderReconnectingProducer(t *testing.T) {
	data := t.TempDir()
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	addr := s.addr
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, err := client.Dial(ctx, addr, client.WithoutReconnect())
	require.NoError(t, err)
	require.NoError(t, admin.CreateTopic(ctx, "exact", client.TopicConfig{Partitions: 3, Storage: "disk", Fsync: "always"}))
	require.NoError(t, admin.Close())

	reconnected := make(chan struct{}, 16)
	p, err := client.Dial(ctx, addr, client.WithIdempotence(), client.WithReconnect(10*time.Millisecond, 200*time.Millisecond),
		client.WithStateHandler(func(st client.State, _ error) {
			if st == client.StateReconnected {
				reconnected <- struct{}{}
			}
		}))
	require.NoError(t, err)
	defer func() { _ = p.Close() }()

	var (
		mu     sync.Mutex
		acks   = map[string]client.Ack{}
		failed []error
		count  atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				v := fmt.Sprintf("g%d-%d", g, i)
				a, err := p.Publish(ctx, "exact", client.Message{Key: []byte(strconv.Itoa(i % 10)), Value: []byte(v)})
				mu.Lock()
				if err != nil {
					failed = append(failed, fmt.Errorf("%s: %w", v, err))
				} else {
					acks[v] = a
				}
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	awaitCount := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return count.Load() >= n }, 2*time.Minute, time.Millisecond)
	}
	for round := range 3 {
		awaitCount(count.Load() + 500)
		require.NoError(t, s.cmd.Process.Kill())
		if err := <-s.exited; err == nil {
			t.Fatal("a broker killed with SIGKILL exited cleanly")
		}
		s.exited <- errors.New("killed")
		s = startServerIn(t, data, nil, "--addr", addr, "--http-addr", "")
		select {
		case <-reconnected:
		case <-ctx.Done():
			t.Fatalf("round %d: the producer did not reconnect", round)
		}
	}
	awaitCount(count.Load() + 500)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, p.Flush(ctx))
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, failed, "an idempotent producer's publishes survive the restarts")

	r, err := client.Dial(ctx, addr, client.WithoutReconnect())
	require.NoError(t, err)
	defer func() { _ = r.Close() }()
	where := map[string]client.Ack{}
	for part := range 3 {
		pos := client.Earliest
		for {
			f, err := r.Fetch(ctx, "exact", part, pos)
			require.NoError(t, err)
			for _, m := range f.Messages {
				v := string(m.Value)
				prev, dup := where[v]
				require.False(t, dup, "%s stored twice: partition %d offset %d and %+v", v, part, m.Offset, prev)
				where[v] = client.Ack{Partition: int32(part), Offset: m.Offset}
			}
			if len(f.Messages) == 0 || f.Next >= f.End {
				break
			}
			pos = client.AtOffset(f.Next)
		}
	}
	for v, a := range acks {
		got, ok := where[v]
		require.True(t, ok, "acknowledged %s is not in the log", v)
		require.Equal(t, a, got, "%s is where its ack said", v)
	}
	t.Logf("%d acknowledged messages, %d in the log, across 3 kills", len(acks), len(where))
}
