package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialT(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestKeyPartitionIsStable pins the documented key hash: changing it would
// move existing keys to other partitions.
func TestKeyPartitionIsStable(t *testing.T) {
	require.Equal(t, 2, client.KeyPartition([]byte(""), 7)) // FNV-1a offset basis 2166136261 % 7
	// Values from an independent FNV-1a implementation.
	cases := map[string]int{"a": 4, "user-42": 3, "orders/eu": 3}
	for k, want := range cases {
		got := client.KeyPartition([]byte(k), 8)
		require.Equal(t, want, got, "key %q", k)
	}
}

func TestSyncPublishersShareBatches(t *testing.T) {
	c := dialT(t, brokerAddr)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	offsets := make(chan int64, 800)
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				ack, err := c.Publish(ctx, "shared", client.Message{Value: fmt.Appendf(nil, "%d-%d", g, i)})
				if err != nil {
					t.Error(err)
					return
				}
				offsets <- ack.Offset
			}
		})
	}
	wg.Wait()
	close(offsets)
	seen := map[int64]bool{}
	for o := range offsets {
		require.False(t, seen[o], "offset %d given twice", o)
		seen[o] = true
	}
	require.Len(t, seen, 800)
}

func TestPublishWaitsForWindowAndHonoursContext(t *testing.T) {
	// A broker that holds acks while a subscriber is behind, and a
	// subscriber that never drains: the publisher's small window fills.
	e, err := startEngine(t.TempDir(), func(c *engine.Config) {
		c.MaxPendingBytes = 4 << 20
		c.MaxAckDelay = time.Hour
		c.SlowConsumerTimeout = time.Hour
		c.StuckConsumerAfter = time.Hour // it holds them however long it stays behind
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	addr := e.Addr().String()
	sub := dialT(t, addr, client.WithSubscriptionPendingBytes(1<<20), client.WithSubscriptionStall(time.Hour))
	block := make(chan struct{})
	_, err = sub.Subscribe(ctxT(t), "window", func(*client.Delivery) { <-block })
	require.NoError(t, err)
	defer close(block)

	pub := dialT(t, addr, client.WithMaxPendingBytes(256<<10))
	value := make([]byte, 4000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var err2 error
	sent := 0
	for ; sent < 10_000; sent++ {
		if err2 = pub.PublishAsync(ctx, "window", client.Message{Value: value}); err2 != nil {
			break
		}
	}
	require.ErrorIs(t, err2, context.DeadlineExceeded, "the publisher waited for window space until its context ended")
	require.Less(t, sent, 10_000)
}

func TestCloseFailsPendingAndLaterCalls(t *testing.T) {
	c, err := client.Dial(ctxT(t), brokerAddr)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	<-c.Done()
	_, err = c.Publish(ctxT(t), "x", client.Message{Value: []byte("v")})
	require.ErrorIs(t, err, client.ErrClosed)
	require.ErrorIs(t, c.CreateTopic(ctxT(t), "x", client.TopicConfig{}), client.ErrClosed)
	_, err = c.Subscribe(ctxT(t), "x", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrClosed)
	require.NoError(t, c.Close(), "Close twice is harmless")
}

func TestConnectionLossIsReported(t *testing.T) {
	e, err := startEngine(t.TempDir(), nil)
	require.NoError(t, err)
	var reported atomic.Value
	c := dialT(t, e.Addr().String(), client.WithoutReconnect(), client.WithErrorHandler(func(err error) { reported.Store(err) }))
	sub, err := c.Subscribe(ctxT(t), "t", func(*client.Delivery) {})
	require.NoError(t, err)
	require.NoError(t, e.Shutdown(context.Background()))
	<-c.Done()
	<-sub.Done()
	require.ErrorIs(t, c.Err(), client.ErrConnectionLost)
	require.ErrorIs(t, c.Err(), client.ErrShuttingDown)
	require.True(t, client.IsRetryable(c.Err()))
	require.NotNil(t, reported.Load())
	_, err = c.Publish(ctxT(t), "t", client.Message{Value: []byte("v")})
	require.ErrorIs(t, err, client.ErrConnectionLost)
}

func TestDialErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, "127.0.0.1:1")
	require.Error(t, err)
	require.False(t, errors.Is(err, client.ErrProtocol))
}

func TestLingerBatchesAtLowRate(t *testing.T) {
	c := dialT(t, brokerAddr, client.WithLinger(20*time.Millisecond))
	ctx := ctxT(t)
	var wg sync.WaitGroup
	acks := make([]client.Ack, 10)
	for i := range acks {
		wg.Go(func() {
			var err error
			acks[i], err = c.Publish(ctx, "linger", client.Message{Value: []byte("v")})
			require.NoError(t, err)
		})
		time.Sleep(time.Millisecond) // a low publish rate, under test: linger batches it
	}
	wg.Wait()
	info, err := c.DescribeTopic(ctx, "linger")
	require.NoError(t, err)
	require.Equal(t, int64(10), info.Partitions[0].EndOffset)
}

func TestInvalidArguments(t *testing.T) {
	c := dialT(t, brokerAddr)
	ctx := ctxT(t)
	_, err := c.Publish(ctx, "bad topic", client.Message{Value: []byte("v")})
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	_, err = c.Subscribe(ctx, "", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	_, err = c.Publish(ctx, "t", client.Message{Value: make([]byte, 2<<20)})
	require.ErrorIs(t, err, client.ErrMessageTooLarge)
	require.ErrorIs(t, c.CreateTopic(ctx, "t2", client.TopicConfig{Partitions: -1}), client.ErrInvalidArgument)
	d, err := c.Ping(ctx)
	require.NoError(t, err)
	require.Greater(t, d, time.Duration(0))
}

// TestBatchesStayUnderTheFrameLimit: with a batch bound as large as the
// broker's frame limit, records that would cross it start a new batch
// instead of making a frame the broker refuses.
func TestBatchesStayUnderTheFrameLimit(t *testing.T) {
	e, err := startEngine(t.TempDir(), func(c *engine.Config) { c.MaxMessageBytes = 100 << 10; c.MaxFrameBytes = 256 << 10 })
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	c := dialT(t, e.Addr().String(), client.WithBatchBytes(1<<30), client.WithLinger(50*time.Millisecond))
	ctx := ctxT(t)
	value := make([]byte, 90<<10)
	for range 20 {
		require.NoError(t, c.PublishAsync(ctx, "big", client.Message{Value: value}))
	}
	require.NoError(t, c.Flush(ctx))
	require.NoError(t, c.Err())
}

// TestPublishBatchAsync: bursts arrive whole and in order, with or without
// a linger; a burst with a message too large is refused before any of it
// is queued.
func TestPublishBatchAsync(t *testing.T) {
	for _, linger := range []time.Duration{0, time.Millisecond} {
		t.Run(fmt.Sprint("linger=", linger), func(t *testing.T) {
			ctx := ctxT(t)
			c := dialT(t, brokerAddr, client.WithLinger(linger))
			topic := fmt.Sprintf("bursts-%d-%d", linger, time.Now().UnixNano())
			require.NoError(t, c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}))
			var want []string
			for b := range 20 {
				burst := make([]client.Message, b%7+1)
				for i := range burst {
					v := fmt.Sprintf("b%d-%d", b, i)
					burst[i] = client.Message{Value: []byte(v)}
					want = append(want, v)
				}
				require.NoError(t, c.PublishBatchAsync(ctx, topic, burst))
			}
			require.NoError(t, c.Flush(ctx))

			huge := make([]byte, 2<<20)
			err := c.PublishBatchAsync(ctx, topic, []client.Message{{Value: []byte("ok")}, {Value: huge}})
			require.ErrorIs(t, err, client.ErrMessageTooLarge)
			require.NoError(t, c.Flush(ctx))

			var got []string
			for off := int64(0); ; {
				f, err := c.Fetch(ctx, topic, 0, client.AtOffset(off))
				require.NoError(t, err)
				for _, m := range f.Messages {
					got = append(got, string(m.Value))
				}
				if off = f.Next; off >= f.End {
					break
				}
			}
			require.Equal(t, want, got, "every burst whole and in order, nothing of the refused one")
		})
	}
}

// TestAckHandlerAccountsForEveryMessage: the acked batches cover each
// message published, asynchronously or not, once, with the offsets the
// partitions hold.
func TestAckHandlerAccountsForEveryMessage(t *testing.T) {
	ctx := ctxT(t)
	admin := dialT(t, brokerAddr)
	require.NoError(t, admin.CreateTopic(ctx, "acks", client.TopicConfig{Partitions: 3}))
	var mu sync.Mutex
	seen := map[int32]map[int64]bool{}
	c := dialT(t, brokerAddr, client.WithBatchBytes(1024), client.WithAckHandler(func(a client.BatchAck) {
		mu.Lock()
		defer mu.Unlock()
		if a.Topic != "acks" { // the reader's goroutine: no FailNow here
			t.Errorf("ack for topic %q", a.Topic)
		}
		if seen[a.Partition] == nil {
			seen[a.Partition] = map[int64]bool{}
		}
		for o := a.BaseOffset; o < a.BaseOffset+int64(a.Count); o++ {
			if seen[a.Partition][o] {
				t.Errorf("offset %d of %d acked twice", o, a.Partition)
			}
			seen[a.Partition][o] = true
		}
	}))
	for i := range 3000 {
		require.NoError(t, c.PublishAsync(ctx, "acks", client.Message{Value: fmt.Appendf(nil, "m%05d", i)}))
	}
	ack, err := c.Publish(ctx, "acks", client.Message{Value: []byte("sync")}, client.ToPartition(1))
	require.NoError(t, err)
	require.NoError(t, c.Flush(ctx))
	info, err := admin.DescribeTopic(ctx, "acks")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, p := range info.Partitions {
		require.Len(t, seen[int32(p.ID)], int(p.EndOffset), "partition %d: every stored offset acked", p.ID)
		total += len(seen[int32(p.ID)])
	}
	require.Equal(t, 3001, total)
	require.True(t, seen[1][ack.Offset], "the synchronous publish too")
}

// TestPublishBatchAsyncRoutesAsPublishAsync: a burst's messages go where
// PublishAsync would send each (by key, to a named partition, or for
// unkeyed messages to the broker's or an idempotent client's choice), in
// order per partition, and a burst longer than one hold of the client's
// lock and than half the pending-bytes bound arrives whole.
func TestPublishBatchAsyncRoutesAsPublishAsync(t *testing.T) {
	for _, idem := range []bool{false, true} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) {
			ctx := ctxT(t)
			opts := []client.Option{client.WithMaxPendingBytes(64 << 10), client.WithBatchBytes(4 << 10)}
			if idem {
				opts = append(opts, client.WithIdempotence())
			}
			c := dialT(t, brokerAddr, opts...)
			topic := fmt.Sprintf("burst-routes-%t-%d", idem, time.Now().UnixNano())
			const parts = 3
			require.NoError(t, c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: parts}))

			// 3,000 messages of about 100 bytes: 12 holds of the lock, and
			// each hold's reservation bounded by 32 KiB.
			burst := make([]client.Message, 3000)
			want := map[int32][]string{}
			var unkeyed []string
			for i := range burst {
				v := fmt.Sprintf("m%04d-%s", i, strings.Repeat("x", 90))
				burst[i].Value = []byte(v)
				switch i % 3 {
				case 0:
					burst[i].Key = fmt.Appendf(nil, "key-%d", i%17)
					p := int32(client.KeyPartition(burst[i].Key, parts))
					want[p] = append(want[p], v)
				case 1:
					burst[i].Headers = []client.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}}
					unkeyed = append(unkeyed, v)
				default:
					unkeyed = append(unkeyed, v)
				}
			}
			require.NoError(t, c.PublishBatchAsync(ctx, topic, burst))
			named := []client.Message{{Value: []byte("named-0")}, {Key: []byte("k"), Value: []byte("named-1")}}
			require.NoError(t, c.PublishBatchAsync(ctx, topic, named, client.ToPartition(2)))
			require.NoError(t, c.Flush(ctx))

			got := map[int32][]string{}
			var gotUnkeyed []string
			for p := range int32(parts) {
				for _, m := range fetchAllT(t, c, topic, int(p)) {
					v := string(m.Value)
					switch {
					case strings.HasPrefix(v, "named-"):
						require.Equal(t, int32(2), p, "a named partition wins over the key")
						got[-1] = append(got[-1], v)
					case m.Key != nil:
						got[p] = append(got[p], v)
					default:
						gotUnkeyed = append(gotUnkeyed, v)
					}
				}
			}
			for p := range int32(parts) {
				require.Equal(t, want[p], got[p], "keyed messages of partition %d, in order", p)
			}
			require.Equal(t, []string{"named-0", "named-1"}, got[-1])
			slices.Sort(gotUnkeyed)
			require.Equal(t, unkeyed, gotUnkeyed, "every unkeyed message once")
		})
	}
}

// TestPublishBatchAsyncRefusesBeforeQueueing: a bad topic name or a
// closed client fails the whole call, and nothing of it is sent.
func TestPublishBatchAsyncRefusesBeforeQueueing(t *testing.T) {
	ctx := ctxT(t)
	c := dialT(t, brokerAddr)
	msgs := []client.Message{{Value: []byte("a")}, {Value: []byte("b")}}
	require.ErrorIs(t, c.PublishBatchAsync(ctx, "no spaces", msgs), client.ErrInvalidArgument)
	require.NoError(t, c.PublishBatchAsync(ctx, "burst-refusals", nil), "an empty burst is no error")
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.PublishBatchAsync(ctx, "burst-refusals", msgs), client.ErrClosed)
}

// TestPublishBatchAsyncCountsWhatItQueued: when ctx ends while a burst
// waits for pending-bytes room, the error says how many of its messages
// were queued, and those are sent.
func TestPublishBatchAsyncCountsWhatItQueued(t *testing.T) {
	f := newFakeBroker(t, 1)
	c := dialT(t, f.ln.Addr().String(), client.WithMaxPendingBytes(4<<10))
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	// 10 messages of 1 KiB: a hold of the lock reserves at most half the
	// bound, 2 KiB (one message with its framing), and the broker acks
	// nothing, so the call waits once the bound is reached.
	msgs := make([]client.Message, 10)
	for i := range msgs {
		msgs[i].Value = make([]byte, 1000)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.PublishBatchAsync(ctx, "t", msgs, client.ToPartition(0)) }()
	p := f.next(t) // what was queued went out before the call waited
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled)
	queued := 0
	_, scanErr := fmt.Sscanf(err.Error(), "%d of 10 messages queued", &queued)
	require.NoError(t, scanErr, "error %q", err)
	require.GreaterOrEqual(t, queued, 1)
	require.Less(t, queued, 10)
	sent := p.count
	for sent < queued {
		sent += f.next(t).count
	}
	require.Equal(t, queued, sent, "the queued messages are sent, and no more")
	f.none(t)
}

// fetchAllT reads partition part of topic from the start to the end.
func fetchAllT(t *testing.T, c *client.Client, topic string, part int) []client.Delivery {
	t.Helper()
	var all []client.Delivery
	for off := int64(0); ; {
		f, err := c.Fetch(ctxT(t), topic, part, client.AtOffset(off))
		require.NoError(t, err)
		all = append(all, f.Messages...)
		if off = f.Next; off >= f.End {
			return all
		}
	}
}
