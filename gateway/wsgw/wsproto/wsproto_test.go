package wsproto

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// encode is a command's encoding, by the package's encoders.
func encode(c *Command) []byte {
	switch c.Op {
	case OpAuth:
		if c.Mech == MechToken {
			return AppendAuthToken(nil, c.ID, c.Token)
		}
		return AppendAuthPassword(nil, c.ID, c.User, c.Password)
	case OpSubscribe:
		return AppendSubscribe(nil, c.ID, c.Topic, c.Partition, wire.Start{Kind: wire.StartKind(c.StartKind), Value: c.StartValue})
	case OpUnsubscribe, OpDescribeTopic, OpDeleteTopic:
		return AppendTopicCommand(nil, c.Op, c.ID, c.Topic, c.Partition)
	case OpCreateTopic:
		return AppendCreateTopic(nil, c.ID, c.Topic, c.Config)
	case OpPublish:
		b, at := AppendPublishHead(nil, c.ID, c.Topic, c.Partition)
		for i := range c.Records {
			b = AppendRecord(b, &c.Records[i])
		}
		SetCount(b, at, len(c.Records))
		return b
	}
	panic("unknown op")
}

func seeds() [][]byte {
	ts := time.Unix(1_700_000_000, 5)
	return [][]byte{
		AppendAuthToken(nil, 1, "tok"),
		AppendAuthPassword(nil, 2, "u", "p"),
		AppendSubscribe(nil, 3, "t", -1, wire.Start{Kind: wire.StartOffset, Value: 42}),
		AppendTopicCommand(nil, OpUnsubscribe, 4, "t", 2),
		AppendTopicCommand(nil, OpDescribeTopic, 5, "t", 0),
		AppendTopicCommand(nil, OpDeleteTopic, 6, "t", 0),
		AppendCreateTopic(nil, 7, "t", []byte(`{"partitions":2}`)),
		encode(&Command{Op: OpPublish, ID: 8, Topic: "t", Partition: -1, Records: []client.Message{
			{Key: []byte("k"), Value: []byte("v"), Headers: []client.Header{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte{}}}, Timestamp: ts},
			{Value: []byte{}},
			{Key: []byte{}, Value: []byte("x"), Headers: []client.Header{{Key: "c", Value: []byte("3")}}},
		}}),
	}
}

// TestCommandsRoundTrip: every command decodes to what was encoded, and a
// frame cut anywhere is refused, never misread.
func TestCommandsRoundTrip(t *testing.T) {
	for _, frame := range seeds() {
		var c Command
		require.NoError(t, DecodeCommand(frame, &c), "%x", frame)
		require.Equal(t, frame, encode(&c))
		for n := range len(frame) {
			require.Error(t, DecodeCommand(frame[:n], &c), "%x cut at %d", frame, n)
		}
	}
	var c Command
	require.NoError(t, DecodeCommand(seeds()[7], &c))
	require.Nil(t, c.Records[1].Key, "no key stays no key")
	require.NotNil(t, c.Records[2].Key, "an empty key stays a key")
	require.Equal(t, []client.Header{{Key: "c", Value: []byte("3")}}, c.Records[2].Headers)
}

// TestRepliesRoundTrip: acks become runs of consecutive offsets, and a
// messages frame reads back record by record.
func TestRepliesRoundTrip(t *testing.T) {
	var r Reply
	acks := []client.Ack{{Partition: 0, Offset: 5}, {Partition: 0, Offset: 6}, {Partition: 1, Offset: 0}, {Partition: 0, Offset: 7}}
	require.NoError(t, DecodeReply(AppendAck(nil, 9, acks), &r))
	require.Equal(t, uint32(9), r.ID)
	require.Equal(t, []AckRun{{0, 5, 2}, {1, 0, 1}, {0, 7, 1}}, r.Runs)
	require.Equal(t, 4, r.Records())

	require.NoError(t, DecodeReply(AppendError(nil, 3, wire.CodeUnknownTopic, "no such topic"), &r))
	require.ErrorIs(t, r.Err(), wire.ErrUnknownTopic)

	b, at := AppendMessagesHead(nil, "t", 3)
	b = AppendDelivery(b, 10, 77, nil, []byte("a"), nil)
	b = AppendDelivery(b, 11, 78, []byte("k"), []byte("b"), []client.Header{{Key: "h", Value: []byte("v")}})
	SetCount(b, at, 2)
	require.NoError(t, DecodeReply(b, &r))
	var d client.Delivery
	require.True(t, r.Next(&d))
	require.Equal(t, int64(10), d.Offset)
	require.Nil(t, d.Key)
	require.True(t, r.Next(&d))
	require.Equal(t, "k", string(d.Key))
	require.Equal(t, int32(3), d.Partition)
	require.Equal(t, []client.Header{{Key: "h", Value: []byte("v")}}, d.Headers)
	require.False(t, r.Next(&d))
	require.NoError(t, r.DeliveriesErr())
}

// FuzzDecodeCommand: no input crashes the decoder or makes it allocate
// past what the frame holds, and whatever decodes encodes back to the
// same frame.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var c Command
		if err := DecodeCommand(frame, &c); err != nil {
			return
		}
		if len(c.Records) > len(frame)/minRecord {
			t.Fatalf("%d records from %d bytes", len(c.Records), len(frame))
		}
		require.Equal(t, frame, encode(&c))
	})
}

// FuzzDecodeReply: the client side's decoder takes any frame without
// crashing, deliveries included.
func FuzzDecodeReply(f *testing.F) {
	b, at := AppendMessagesHead(nil, "t", 0)
	b = AppendDelivery(b, 1, 2, []byte("k"), []byte("v"), []client.Header{{Key: "h", Value: []byte("x")}})
	SetCount(b, at, 1)
	f.Add(b)
	f.Add(AppendAck(nil, 1, []client.Ack{{Partition: 0, Offset: 1}}))
	f.Add(AppendError(nil, 1, wire.CodeInternal, "x"))
	f.Add(AppendTopic(nil, 1, []byte(`{}`)))
	f.Add(AppendOK(nil, 1))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var r Reply
		if DecodeReply(frame, &r) != nil {
			return
		}
		var d client.Delivery
		for n := 0; r.Next(&d); n++ {
			if n > len(frame)/minDelivery {
				t.Fatalf("more deliveries than %d bytes hold", len(frame))
			}
		}
	})
}
