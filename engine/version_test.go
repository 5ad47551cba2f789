package engine

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// v1TopicInfo encodes a TopicInfo body as protocol version 1 lays it out
// (PROTOCOL.md §4.8), independently of package wire.
func v1TopicInfo(t *Topic) []byte {
	str16 := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	b := str16(nil, t.Name)
	kvs := t.Config().KVs()
	b = binary.BigEndian.AppendUint16(b, uint16(len(kvs)))
	for _, kv := range kvs {
		b = str16(str16(b, kv.Key), kv.Value)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Parts)))
	for i, p := range t.Parts {
		st := p.Log.Stats()
		b = binary.BigEndian.AppendUint32(b, uint32(i))
		b = binary.BigEndian.AppendUint64(b, uint64(st.Start))
		b = binary.BigEndian.AppendUint64(b, uint64(st.End))
		b = binary.BigEndian.AppendUint32(b, uint32(p.Subscribers()))
		b = binary.BigEndian.AppendUint64(b, uint64(st.Bytes))
		b = binary.BigEndian.AppendUint32(b, uint32(st.Segments))
		b = binary.BigEndian.AppendUint32(b, uint32(len(st.Corrupt)))
	}
	return b
}

// runID completes a version 3 handshake and returns the broker's run id.
func (r *rawConn) runID() uint64 {
	r.t.Helper()
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 3, MaxVersion: 3, ClientName: "raw"}).Append(nil))
	f := r.next()
	require.Equal(r.t, wire.TypeHelloOK, f.Type)
	ok, err := wire.DecodeHelloOK(f.Body)
	require.NoError(r.t, err)
	require.NotZero(r.t, ok.RunID)
	return ok.RunID
}

// expectError checks that f is an Error with code.
func (r *rawConn) expectError(f wire.Frame, code wire.Code) {
	r.t.Helper()
	require.Equal(r.t, wire.TypeError, f.Type)
	e, err := wire.DecodeError(f.Body)
	require.NoError(r.t, err)
	require.Equal(r.t, code, e.Code, e.Message)
}

// helloVersion completes a raw handshake offering versions 1..maxV and
// returns the version the broker picked.
func (r *rawConn) helloVersion(maxV uint16) uint16 {
	r.t.Helper()
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 1, MaxVersion: maxV, ClientName: "raw"}).Append(nil))
	f := r.next()
	require.Equal(r.t, wire.TypeHelloOK, f.Type)
	ok, err := wire.DecodeHelloOK(f.Body)
	require.NoError(r.t, err)
	return ok.Version
}

// TestTopicInfoByVersion: the broker picks min(client max, its newest) at Hello
// and answers DescribeTopic and AlterTopic in that version's layout. A
// version 1 client gets exactly the bytes version 1 always had; version 2
// adds each partition's state and reason.
func TestTopicInfoByVersion(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "v", client.TopicConfig{Partitions: 2}))
	for range 3 {
		_, err := c.Publish(ctx, "v", client.Message{Value: []byte("x")}, client.ToPartition(1))
		require.NoError(t, err)
	}
	topic := e.topics.get([]byte("v"))

	r1 := dialRaw(t, e)
	require.Equal(t, uint16(1), r1.helloVersion(1))
	r1.sendFrame(wire.TypeDescribeTopic, 2, wire.AppendName(nil, "v"))
	f := r1.next()
	require.Equal(t, wire.TypeTopicInfo, f.Type)
	require.Equal(t, v1TopicInfo(topic), f.Body, "version 1: the version 1 bytes")
	r1.sendFrame(wire.TypeAlterTopic, 3, (&wire.CreateTopic{Name: "v", Config: []wire.KV{{Key: ConfigRetention, Value: "2h"}}}).Append(nil))
	f = r1.next()
	require.Equal(t, wire.TypeTopicInfo, f.Type)
	require.Equal(t, v1TopicInfo(topic), f.Body, "AlterTopic answers in version 1 too")

	for _, maxV := range []uint16{2, 3, 9} {
		r2 := dialRaw(t, e)
		v := r2.helloVersion(maxV)
		require.Equal(t, min(maxV, wire.Version), v, "the broker picks min(client max, its newest)")
		r2.sendFrame(wire.TypeDescribeTopic, 2, wire.AppendName(nil, "v"))
		f = r2.next()
		require.Equal(t, wire.TypeTopicInfo, f.Type)
		require.Len(t, f.Body, len(v1TopicInfo(topic))+2*(1+2), "a state byte and an empty reason per partition")
		info, err := wire.DecodeTopicInfo(f.Body, v)
		require.NoError(t, err)
		require.Equal(t, int64(3), info.Partitions[1].EndOffset)
		require.Equal(t, wire.PartitionOnline, info.Partitions[1].State)
	}
	info, err := c.DescribeTopic(ctx, "v")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOnline, info.Partitions[0].State, "the Go client speaks version 2")
}

// TestSubscribeResumeByVersion: version 3 answers every Subscribe, LATEST
// too, with each partition's start offset and the topic's storage, and
// takes resume offsets, moved into the log's bounds; an older connection
// that sends them is malformed.
func TestSubscribeResumeByVersion(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "rv", client.TopicConfig{Partitions: 3}))
	for range 5 {
		_, err := c.Publish(ctx, "rv", client.Message{Value: []byte("x")}, client.ToPartition(1))
		require.NoError(t, err)
	}
	sub := func(r *rawConn, corr uint32, s wire.Subscribe) wire.Frame {
		r.sendFrame(wire.TypeSubscribe, corr, s.Append(nil))
		return r.next()
	}

	old := dialRaw(t, e)
	require.Equal(t, uint16(2), old.helloVersion(2))
	f := sub(old, 2, wire.Subscribe{Topic: "rv", Partition: wire.PartitionAny, Resume: []wire.PartitionStart{{Partition: 1, Offset: 2}}})
	old.expectError(f, wire.CodeMalformed)

	r := dialRaw(t, e)
	require.Equal(t, uint16(3), r.helloVersion(3))
	f = sub(r, 2, wire.Subscribe{Topic: "rv", Partition: wire.PartitionAny})
	require.Equal(t, wire.TypeSubscribeOK, f.Type)
	ok, err := wire.DecodeSubscribeOK(f.Body, 3)
	require.NoError(t, err)
	require.True(t, ok.Durable)
	require.Equal(t, []wire.PartitionStart{{Partition: 0, Offset: 0}, {Partition: 1, Offset: 5}, {Partition: 2, Offset: 0}}, ok.Starts,
		"LATEST starts at each partition's end")

	r = dialRaw(t, e)
	r.helloVersion(3)
	f = sub(r, 2, wire.Subscribe{Topic: "rv", Partition: wire.PartitionAny,
		Resume: []wire.PartitionStart{{Partition: 1, Offset: 2}, {Partition: 2, Offset: 99}}})
	require.Equal(t, wire.TypeSubscribeOK, f.Type)
	ok, err = wire.DecodeSubscribeOK(f.Body, 3)
	require.NoError(t, err)
	require.Equal(t, []wire.PartitionStart{{Partition: 0, Offset: 0}, {Partition: 1, Offset: 2}, {Partition: 2, Offset: 0}}, ok.Starts,
		"partition 1 resumes at 2; 99 is past partition 2's end, which it is moved to")
	f = r.next()
	require.Equal(t, wire.TypeDeliver, f.Type, "the replay from offset 2")
	v, err := wire.DecodeBatchView(f.Body)
	require.NoError(t, err)
	require.Equal(t, int32(1), v.Partition)

	for _, bad := range [][]wire.PartitionStart{{{Partition: 3, Offset: 0}}, {{Partition: 0, Offset: 0}, {Partition: 0, Offset: 1}}} {
		r = dialRaw(t, e)
		r.helloVersion(3)
		r.expectError(sub(r, 2, wire.Subscribe{Topic: "rv", Partition: wire.PartitionAny, Resume: bad}), wire.CodeInvalidArgument)
	}
	r = dialRaw(t, e)
	r.helloVersion(3)
	r.expectError(sub(r, 2, wire.Subscribe{Topic: "rv", Partition: 0, Resume: []wire.PartitionStart{{Partition: 1, Offset: 0}}}),
		wire.CodeInvalidArgument)

	// The run id is the same on every connection of one run.
	a, b := dialRaw(t, e), dialRaw(t, e)
	require.Equal(t, a.runID(), b.runID())
}
