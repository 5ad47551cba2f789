package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestKill9KeepsAcknowledgedMessages runs the broker as a process, publishes
// with fsync=always acks, kills it with SIGKILL at a random moment, restarts
// it, and checks that every acknowledged message is there exactly once, in
// order; several rounds on the same data, each also a clean restart check.
func TestKill9KeepsAcknowledgedMessages(t *testing.T) {
	data := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var acked int64 // messages 0..acked-1 were acknowledged
	for round := range 5 {
		s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// Without reconnecting: the client's publishes stop with the
		// broker, and what was acked is checked by a client of the next
		// run (TestKill9UnderReconnectingProducer has one that goes on).
		c, err := client.Dial(ctx, s.addr, client.WithoutReconnect())
		require.NoError(t, err)
		if round == 0 {
			require.NoError(t, c.CreateTopic(ctx, "k9", client.TopicConfig{Storage: "disk", Fsync: "always"}))
		}
		end := verifyLog(t, ctx, c, acked, round)

		// Publish in flushed groups; a group counts as acked once Flush
		// returns. Kill the broker at a random moment meanwhile.
		var ackedNow atomic.Int64
		ackedNow.Store(end)
		done := make(chan struct{})
		first := make(chan struct{}) // closed once a group was acked
		go func() {
			defer close(done)
			next := end
			for {
				for range 50 {
					if c.PublishAsync(ctx, "k9", client.Message{Value: []byte(strconv.FormatInt(next, 10))}) != nil {
						return
					}
					next++
				}
				if c.Flush(ctx) != nil {
					return
				}
				if ackedNow.Swap(next) == end {
					close(first)
				}
			}
		}()
		// The kill falls at a random moment after the first acked group,
		// however slowly a loaded machine got there.
		select {
		case <-first:
		case <-done:
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond) // a random kill point, under test: not a wait
		require.NoError(t, s.cmd.Process.Kill())
		<-done
		if err := <-s.exited; err == nil {
			t.Fatal("a broker killed with SIGKILL exited cleanly")
		}
		s.exited <- errors.New("killed")
		acked = ackedNow.Load()
		require.Positive(t, acked-end, "round %d published something", round)
		t.Logf("round %d: log had %d, acked %d before SIGKILL", round, end, acked)
		_ = c.Close()
		cancel()
	}
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.addr)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	verifyLog(t, ctx, c, acked, 5)
}

// verifyLog reads the whole log and checks it holds "0", "1", ... with
// no gap, duplicate or reordering, and at least acked messages. It returns
// the end offset.
func verifyLog(t *testing.T, ctx context.Context, c *client.Client, acked int64, round int) int64 {
	t.Helper()
	var n int64
	pos := client.Earliest
	for {
		f, err := c.Fetch(ctx, "k9", 0, pos)
		require.NoError(t, err)
		for _, m := range f.Messages {
			require.Equal(t, strconv.FormatInt(n, 10), string(m.Value), "round %d offset %d", round, n)
			require.Equal(t, n, m.Offset)
			n++
		}
		if len(f.Messages) == 0 || f.Next >= f.End {
			break
		}
		pos = client.AtOffset(f.Next)
	}
	require.GreaterOrEqual(t, n, acked, fmt.Sprintf("round %d: %d acknowledged messages, %d in the log", round, acked, n))
	return n
}
