package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// jsonMessage is a text-like message, as a service logs: repeated keys,
// varied values.
func jsonMessage(i int) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"level":"%s","service":"checkout","user_id":%d,"path":"/api/v1/orders/%d","status":%d,"msg":"order %d created"}`,
		i, []string{"info", "warn", "error"}[i%3], i*7919%100000, i*31, []int{200, 201, 404}[i%3], i)
}

const poison = "poison"

// compressedMessages are what each codec's producer publishes: keyed, some
// with headers, one that message-mode groups dead-letter.
func compressedMessages(n int) []client.Message {
	msgs := make([]client.Message, n)
	for i := range msgs {
		msgs[i] = client.Message{Key: []byte("user-" + strconv.Itoa(i%7)), Value: jsonMessage(i)}
		if i%4 == 0 {
			msgs[i].Headers = []client.Header{{Key: "trace", Value: []byte("t-" + strconv.Itoa(i))}}
		}
		if i == 13 {
			msgs[i].Value = append(msgs[i].Value, poison...)
		}
	}
	return msgs
}

// TestCompressionEndToEnd publishes with each codec and reads back through
// every consumer path: a live subscription, fetch, a message-mode group
// with a dead-letter copy, and a replay after a restart. The broker stores
// the batches as the producer compressed them.
func TestCompressionEndToEnd(t *testing.T) {
	e := startBroker(t, nil)
	codecs := []client.Codec{client.NoCompression, client.LZ4, client.Zstd, client.Snappy}
	const n = 600
	msgs := compressedMessages(n)
	for _, codec := range codecs {
		topic := "c-" + codec.String()
		t.Run(codec.String(), func(t *testing.T) {
			ctx := testCtx(t)
			admin := dial(t, e)
			require.NoError(t, admin.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 2}))
			live := subscribeAll(t, dial(t, e), topic, client.Latest)

			p := dial(t, e, client.WithCompression(codec), client.WithLinger(2*time.Millisecond))
			require.NoError(t, p.PublishBatchAsync(ctx, topic, msgs[:n/2]))
			for _, m := range msgs[n/2:] {
				require.NoError(t, p.PublishAsync(ctx, topic, m))
			}
			require.NoError(t, p.Flush(ctx))
			require.Equal(t, n, total(topicEnds(t, admin, topic)))

			checkReceived(t, msgs, live.wait(t, n))
			checkReceived(t, msgs, fetchEveryPartition(t, admin, topic))
			checkStoredCodec(t, e, topic, codec)
			checkGroupAndDeadLetter(t, e, admin, topic, msgs)
		})
	}
	// Recovery reads the stored batches back: every codec's topic replays
	// whole after a restart.
	e = restart(t, e, nil)
	c := dial(t, e)
	for _, codec := range codecs {
		checkReceived(t, msgs, subscribeAll(t, c, "c-"+codec.String(), client.Earliest).wait(t, n))
	}
}

// received gathers a subscription's deliveries, owned.
type received struct {
	mu  sync.Mutex
	got []client.Delivery
}

func subscribeAll(t *testing.T, c *client.Client, topic string, from client.Position) *received {
	t.Helper()
	r := &received{}
	_, err := c.Subscribe(testCtx(t), topic, func(d *client.Delivery) {
		r.mu.Lock()
		r.got = append(r.got, d.Clone())
		r.mu.Unlock()
	}, client.StartAt(from))
	require.NoError(t, err)
	return r
}

func (r *received) wait(t *testing.T, n int) []client.Delivery {
	t.Helper()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.got) >= n
	}, 30*time.Second, 5*time.Millisecond, "%d deliveries", n)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Delivery(nil), r.got...)
}

// checkReceived checks that got holds each of msgs once, with its key and
// headers, each partition in publish order.
func checkReceived(t *testing.T, msgs []client.Message, got []client.Delivery) {
	t.Helper()
	require.Len(t, got, len(msgs))
	byValue := map[string]client.Message{}
	for _, m := range msgs {
		byValue[string(m.Value)] = m
	}
	last := map[int32]int{}
	for _, d := range got {
		m, ok := byValue[string(d.Value)]
		require.True(t, ok, "unexpected or repeated message %q", d.Value)
		delete(byValue, string(d.Value))
		require.Equal(t, m.Key, d.Key)
		require.Equal(t, len(m.Headers), len(d.Headers))
		for i, h := range m.Headers {
			require.Equal(t, h.Key, d.Headers[i].Key)
			require.Equal(t, h.Value, d.Headers[i].Value)
		}
		seq, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(string(d.Value), ",", 2)[0], `{"seq":`))
		require.NoError(t, err)
		if prev, ok := last[d.Partition]; ok {
			require.Less(t, prev, seq, "partition %d out of order", d.Partition)
		}
		last[d.Partition] = seq
	}
}

// fetchEveryPartition fetches every partition of topic from the start, in small
// steps so that fetches begin in the middle of compressed batches.
func fetchEveryPartition(t *testing.T, c *client.Client, topic string) []client.Delivery {
	t.Helper()
	var out []client.Delivery
	for p := range topicEnds(t, c, topic) {
		from := client.Earliest
		for {
			f, err := c.Fetch(testCtx(t), topic, p, from, client.MaxBytes(1))
			require.NoError(t, err)
			out = append(out, f.Messages...)
			if f.Next >= f.End {
				break
			}
			from = client.AtOffset(f.Next - int64(len(f.Messages)/2)) // overlap: start mid-batch
			out = out[:len(out)-len(f.Messages)/2]
		}
	}
	return out
}

// checkStoredCodec fetches raw batches and checks the log holds them as
// the producer compressed them.
func checkStoredCodec(t *testing.T, e *Engine, topic string, codec client.Codec) {
	t.Helper()
	r := dialRaw(t, e)
	r.hello()
	req := wire.Fetch{Topic: topic, Partition: 0, Start: wire.Start{Kind: wire.StartEarliest}, MaxBytes: 1 << 20}
	r.sendFrame(wire.TypeFetch, 9, req.Append(nil))
	f := r.next()
	require.Equal(t, wire.TypeFetchResult, f.Type)
	_, batches, err := wire.DecodeFetchResult(f.Body)
	require.NoError(t, err)
	require.NotEmpty(t, batches)
	compressed := 0
	for _, b := range batches {
		if b.Codec() == codec {
			compressed++
		} else {
			require.Equal(t, wire.CodecNone, b.Codec(), "a batch stored with another codec")
		}
	}
	require.NotZero(t, compressed, "no batch stored with %s", codec)
}

// checkGroupAndDeadLetter consumes topic in a message-mode group that
// nacks the poison message until it is dead-lettered, and checks the
// dead-letter copy is readable.
func checkGroupAndDeadLetter(t *testing.T, e *Engine, c *client.Client, topic string, msgs []client.Message) {
	t.Helper()
	g := &received{}
	joinGroup(t, e, client.GroupConfig{Group: "g-" + topic, Topic: topic, Mode: client.AckMessage,
		Start: client.Earliest, MaxDeliveries: 2, Handler: func(m *client.GroupMessage) error {
			if bytes.HasSuffix(m.Value, []byte(poison)) {
				return fmt.Errorf("cannot parse")
			}
			if m.Attempt == 1 {
				g.mu.Lock()
				g.got = append(g.got, m.Clone())
				g.mu.Unlock()
			}
			return nil
		}})
	got := g.wait(t, len(msgs)-1)
	waitAllAcked(t, c, "g-"+topic)
	var poisoned client.Message
	var rest []client.Message
	for _, m := range msgs {
		if bytes.HasSuffix(m.Value, []byte(poison)) {
			poisoned = m
		} else {
			rest = append(rest, m)
		}
	}
	checkReceived(t, rest, got)
	dlq := subscribeAll(t, c, topic+".dlq", client.Earliest).wait(t, 1)
	require.Equal(t, poisoned.Value, dlq[0].Value)
	require.Equal(t, poisoned.Key, dlq[0].Key)
}

// TestCorruptCompressedPublish sends compressed batches that pass the CRC
// but not decompression: each is refused with CORRUPT_BATCH, the
// connection stays, and nothing is stored.
func TestCorruptCompressedPublish(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "guarded", client.TopicConfig{Partitions: 1}))
	values := make([][]byte, 20)
	for i := range values {
		values[i] = jsonMessage(i)
	}
	good := compressedPublish("guarded", wire.CodecZstd, values)
	batchOff := len(good) - wire.BatchSize(good[wire.HeaderSize+2+len("guarded")+4:])
	refix := func(f []byte) []byte {
		b := wire.Batch(f[batchOff:])
		binary.BigEndian.PutUint32(f[batchOff+16:], b.ComputeCRC())
		return f
	}
	bad := map[string][]byte{
		"garbage": refix(func() []byte {
			f := bytes.Clone(good)
			for i := batchOff + wire.BatchHeaderSize + 8; i < len(f); i += 5 {
				f[i] ^= 0xa5
			}
			return f
		}()),
		"bomb": refix(func() []byte {
			f := bytes.Clone(good)
			binary.BigEndian.PutUint32(f[batchOff+wire.BatchHeaderSize:], 1<<30)
			return f
		}()),
		"wrong length": refix(func() []byte {
			f := bytes.Clone(good)
			n := binary.BigEndian.Uint32(f[batchOff+wire.BatchHeaderSize:])
			binary.BigEndian.PutUint32(f[batchOff+wire.BatchHeaderSize:], n+3)
			return f
		}()),
		"unknown codec": func() []byte {
			f := bytes.Clone(good)
			f[batchOff+13] = 6
			return f
		}(),
		"codec flipped": func() []byte {
			f := bytes.Clone(good)
			f[batchOff+13] = byte(wire.CodecLZ4)
			return f
		}(),
	}
	r := dialRaw(t, e)
	r.hello()
	corr := uint32(10)
	for name, frame := range bad {
		corr++
		wire.SetCorr(frame, corr)
		r.send(frame)
		f := r.next()
		require.Equal(t, wire.TypeError, f.Type, name)
		require.Equal(t, corr, f.Corr, name)
		werr, err := wire.DecodeError(f.Body)
		require.NoError(t, err)
		require.Equal(t, wire.CodeCorruptBatch, werr.Code, "%s: %v", name, werr)
		require.Equal(t, []int64{0}, topicEnds(t, c, "guarded"), "%s: nothing stored", name)
	}
	// The connection still publishes.
	wire.SetCorr(good, 99)
	r.send(good)
	f := r.next()
	require.Equal(t, wire.TypePublishAck, f.Type, "error: %s", f.Body)
	require.Equal(t, []int64{int64(len(values))}, topicEnds(t, c, "guarded"))
}

// compressedPublish is a Publish frame of values compressed with codec.
func compressedPublish(topic string, codec wire.Codec, values [][]byte) []byte {
	buf, start := wire.StartFrame(nil, wire.TypePublish, 0, 1)
	buf = wire.AppendBatchPrefix(buf, topic, 0)
	var bb wire.BatchBuilder
	bb.Start(buf, -1, -1)
	for _, v := range values {
		bb.Append(time.Now().UnixNano(), nil, v, nil)
	}
	buf = bb.FinishCompressed(codec)
	wire.FinishFrame(buf, start)
	return buf
}
