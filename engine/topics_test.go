package engine

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

func TestTopicAdmin(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.AutoCreateTopics = false })
	ctx := testCtx(t)
	c := dial(t, e)

	require.NoError(t, c.CreateTopic(ctx, "b", client.TopicConfig{Partitions: 3, MaxSubscribers: 5}))
	require.NoError(t, c.CreateTopic(ctx, "a", client.TopicConfig{}))
	require.ErrorIs(t, c.CreateTopic(ctx, "a", client.TopicConfig{}), client.ErrTopicExists)
	require.ErrorIs(t, c.CreateTopic(ctx, "bad/name", client.TopicConfig{}), client.ErrInvalidArgument)
	require.ErrorIs(t, c.CreateTopic(ctx, "big", client.TopicConfig{Partitions: 5000}), client.ErrInvalidArgument)
	require.ErrorIs(t, c.CreateTopic(ctx, "subs", client.TopicConfig{MaxSubscribers: 10001}), client.ErrInvalidArgument)

	list, err := c.ListTopics(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.TopicSummary{{Name: "a", Partitions: 1}, {Name: "b", Partitions: 3}}, list)

	info, err := c.DescribeTopic(ctx, "b")
	require.NoError(t, err)
	require.Len(t, info.Partitions, 3)
	require.Equal(t, "5", info.Config["max-subscribers"])

	_, err = c.Publish(ctx, "b", client.Message{Value: []byte("x")}, client.ToPartition(2))
	require.NoError(t, err)
	info, err = c.DescribeTopic(ctx, "b")
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Partitions[2].EndOffset)
	require.Equal(t, int64(0), info.Partitions[1].EndOffset)

	require.NoError(t, c.DeleteTopic(ctx, "b"))
	require.ErrorIs(t, c.DeleteTopic(ctx, "b"), client.ErrUnknownTopic)
	_, err = c.DescribeTopic(ctx, "b")
	require.ErrorIs(t, err, client.ErrUnknownTopic)
	_, err = c.Publish(ctx, "b", client.Message{Value: []byte("x")})
	require.ErrorIs(t, err, client.ErrUnknownTopic, "auto-creation is off")
	_, err = c.Subscribe(ctx, "b", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrUnknownTopic)
}

func TestAutoCreateOnPublishAndSubscribe(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.DefaultPartitions = 2 })
	ctx := testCtx(t)
	c := dial(t, e)
	_, err := c.Publish(ctx, "fresh", client.Message{Value: []byte("x")})
	require.NoError(t, err)
	_, err = c.Subscribe(ctx, "fresh2", func(*client.Delivery) {})
	require.NoError(t, err)
	list, err := c.ListTopics(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.TopicSummary{{Name: "fresh", Partitions: 2}, {Name: "fresh2", Partitions: 2}}, list)
}

func TestTopicLimits(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxTopics = 2; c.MaxSubscribers = 2 })
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "one", client.TopicConfig{}))
	require.NoError(t, c.CreateTopic(ctx, "two", client.TopicConfig{}))
	require.ErrorIs(t, c.CreateTopic(ctx, "three", client.TopicConfig{}), client.ErrTooManyTopics)
	_, err := c.Publish(ctx, "three", client.Message{Value: []byte("x")})
	require.ErrorIs(t, err, client.ErrTooManyTopics, "auto-creation respects the limit")

	s1, s2, s3 := dial(t, e), dial(t, e), dial(t, e)
	_, err = s1.Subscribe(ctx, "one", func(*client.Delivery) {})
	require.NoError(t, err)
	sub2, err := s2.Subscribe(ctx, "one", func(*client.Delivery) {})
	require.NoError(t, err)
	_, err = s3.Subscribe(ctx, "one", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrTooManySubscribers)
	require.NoError(t, sub2.Unsubscribe(ctx))
	_, err = s3.Subscribe(ctx, "one", func(*client.Delivery) {})
	require.NoError(t, err, "an unsubscribe frees a place")
	require.NoError(t, s1.Close())
	s4 := dial(t, e)
	require.Eventually(t, func() bool {
		_, err := s4.Subscribe(ctx, "one", func(*client.Delivery) {})
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "a closed connection frees its place")
}

func TestPartitions(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "p", client.TopicConfig{Partitions: 4}))

	_, err := c.Publish(ctx, "p", client.Message{Value: []byte("x")}, client.ToPartition(4))
	require.ErrorIs(t, err, client.ErrUnknownPartition)

	// Without a key or partition the broker spreads batches round robin.
	seen := map[int32]bool{}
	for range 8 {
		ack, err := c.Publish(ctx, "p", client.Message{Value: []byte("x")})
		require.NoError(t, err)
		seen[ack.Partition] = true
	}
	require.Len(t, seen, 4)

	// A key always maps to the same partition: KeyPartition's.
	for i := range 20 {
		key := []byte(fmt.Sprintf("key-%d", i))
		ack, err := c.Publish(ctx, "p", client.Message{Key: key, Value: []byte("x")})
		require.NoError(t, err)
		require.Equal(t, int32(client.KeyPartition(key, 4)), ack.Partition)
	}

	// A subscriber to one partition sees only that partition.
	var mu sync.Mutex
	var parts []int32
	sc := dial(t, e)
	_, err = sc.Subscribe(ctx, "p", func(d *client.Delivery) {
		mu.Lock()
		parts = append(parts, d.Partition)
		mu.Unlock()
	}, client.FromPartition(1))
	require.NoError(t, err)
	for p := range 4 {
		_, err := c.Publish(ctx, "p", client.Message{Value: []byte("x")}, client.ToPartition(p))
		require.NoError(t, err)
	}
	_, err = c.Publish(ctx, "p", client.Message{Value: []byte("last")}, client.ToPartition(1))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(parts) == 2
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, []int32{1, 1}, parts)

	_, err = sc.Subscribe(ctx, "p", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrAlreadySubscribed, "all partitions overlap partition 1 on one connection")
}

func TestSubscribeTwiceOnOneClientFansOutLocally(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	a, b := make(chan string, 10), make(chan string, 10)
	subA, err := c.Subscribe(ctx, "t", func(d *client.Delivery) { a <- string(d.Value) })
	require.NoError(t, err)
	_, err = c.Subscribe(ctx, "t", func(d *client.Delivery) { b <- string(d.Value) })
	require.NoError(t, err)
	_, err = c.Publish(ctx, "t", client.Message{Value: []byte("1")})
	require.NoError(t, err)
	require.Equal(t, "1", <-a)
	require.Equal(t, "1", <-b)
	require.NoError(t, subA.Unsubscribe(ctx))
	<-subA.Done()
	_, err = c.Publish(ctx, "t", client.Message{Value: []byte("2")})
	require.NoError(t, err)
	require.Equal(t, "2", <-b)
	select {
	case v := <-a:
		t.Fatalf("unsubscribed handler got %q", v)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSubscribeChan(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	sub, ch, err := c.SubscribeChan(ctx, "t", 16)
	require.NoError(t, err)
	_, err = c.Publish(ctx, "t", client.Message{Key: []byte("k"), Value: []byte("v"),
		Headers: []client.Header{{Key: "h", Value: []byte("1")}}})
	require.NoError(t, err)
	d := <-ch
	require.Equal(t, "k", string(d.Key))
	require.Equal(t, "v", string(d.Value))
	require.Equal(t, []client.Header{{Key: "h", Value: []byte("1")}}, d.Headers)
	require.NoError(t, sub.Unsubscribe(ctx))
	_, open := <-ch
	require.False(t, open, "the channel closes when the subscription ends")
}

// TestSameKeySamePartitionProperty: for any set of keys, every message
// with a key lands on KeyPartition's partition, whatever the batching,
// and in publish order within it.
func TestSameKeySamePartitionProperty(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.DefaultStorage = "memory" })
	c := dial(t, e)
	ctx := testCtx(t)
	round := 0
	rapid.Check(t, func(rt *rapid.T) {
		round++
		topic := "keys-" + strconv.Itoa(round)
		parts := rapid.IntRange(1, 16).Draw(rt, "partitions")
		require.NoError(rt, c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: parts}))
		keys := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 0, 24), 1, 20).Draw(rt, "keys")
		n := rapid.IntRange(1, 200).Draw(rt, "messages")
		type sent struct {
			key int
			seq int
		}
		var order []sent
		for i := range n {
			k := rapid.IntRange(0, len(keys)-1).Draw(rt, "key")
			order = append(order, sent{k, i})
			require.NoError(rt, c.PublishAsync(ctx, topic, client.Message{Key: keys[k], Value: []byte(strconv.Itoa(i))}))
		}
		require.NoError(rt, c.Flush(ctx))
		// Read every partition back: each message must be on its key's
		// partition, and each key's messages in order.
		got := map[int][]int{} // partition -> seqs in log order
		for p := range parts {
			f, err := c.Fetch(ctx, topic, p, client.Earliest, client.MaxBytes(1<<20))
			require.NoError(rt, err)
			for _, m := range f.Messages {
				seq, err := strconv.Atoi(string(m.Value))
				require.NoError(rt, err)
				got[p] = append(got[p], seq)
			}
		}
		where := map[int]int{}
		for p, seqs := range got {
			for _, s := range seqs {
				where[s] = p
			}
			require.True(rt, slices.IsSorted(seqs), "partition %d out of order", p)
		}
		require.Len(rt, where, n)
		for _, s := range order {
			require.Equal(rt, client.KeyPartition(keys[s.key], parts), where[s.seq], "message %d", s.seq)
		}
		require.NoError(rt, c.DeleteTopic(ctx, topic))
	})
}
