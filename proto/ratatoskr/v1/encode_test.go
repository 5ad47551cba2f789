package ratatoskrv1

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// sent is what Codec.Marshal hands gRPC for v, as one slice; the buffers
// go back to the pool as gRPC's would.
func sent(t *testing.T, v any) []byte {
	t.Helper()
	data, err := Codec{}.Marshal(v)
	require.NoError(t, err)
	b := data.Materialize()
	data.Free()
	return b
}

// The encoders write what proto.Unmarshal reads back as the message they
// were given record by record, including negative partitions, empty keys
// and headers; an encoder sent is empty for the next message, and the
// buffers decode the same through PublishBuffer and SubscribeBuffer.
func TestEncodersRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var pe PublishEncoder
	var se SubscribeEncoder
	var pbuf PublishBuffer
	var sbuf SubscribeBuffer
	for range 500 {
		want := randomPublish(r)
		pe.Start(want.Topic, want.Partition)
		for _, rec := range want.Records {
			pe.Add(rec.Key, rec.Value, rec.TimestampNs, rec.Headers)
		}
		pe.SetID(want.Id)
		require.Equal(t, len(want.Records), pe.Records())
		b := sent(t, &pe)
		require.Zero(t, pe.Len())
		var got PublishRequest
		require.NoError(t, proto.Unmarshal(b, &got))
		require.True(t, proto.Equal(want, &got), "publish: want %v, got %v", want, &got)
		require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &pbuf))
		require.True(t, proto.Equal(want, &pbuf.Request), "publish buffer: want %v, got %v", want, &pbuf.Request)

		wantSub := randomSubscribe(r)
		for _, d := range wantSub.Records {
			se.Add(d.Partition, d.Offset, d.Key, d.Value, d.TimestampNs, d.Headers)
		}
		require.Equal(t, len(wantSub.Records), se.Records())
		b = sent(t, &se)
		require.Zero(t, se.Records())
		var gotSub SubscribeResponse
		require.NoError(t, proto.Unmarshal(b, &gotSub))
		require.True(t, proto.Equal(wantSub, &gotSub), "subscribe: want %v, got %v", wantSub, &gotSub)
		require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &sbuf))
		require.True(t, proto.Equal(wantSub, &sbuf.Response))
	}
}

// Start drops a request begun and not sent, and Reset a response.
func TestEncodersStartAnew(t *testing.T) {
	var pe PublishEncoder
	pe.Start("a", nil)
	pe.Add([]byte("k"), []byte("v"), 1, nil)
	pe.Start("b", nil)
	pe.Add(nil, []byte("w"), 0, nil)
	var got PublishRequest
	require.NoError(t, proto.Unmarshal(sent(t, &pe), &got))
	require.True(t, proto.Equal(&PublishRequest{Topic: "b", Records: []*Record{{Value: []byte("w")}}}, &got))

	var se SubscribeEncoder
	se.Add(1, 2, nil, []byte("x"), 0, nil)
	se.Reset()
	var gotSub SubscribeResponse
	require.NoError(t, proto.Unmarshal(sent(t, &se), &gotSub))
	require.Empty(t, gotSub.Records)
}

// A large request grows through the pool's classes and past them.
func TestPublishEncoderLarge(t *testing.T) {
	var pe PublishEncoder
	pe.Start("big", nil)
	v := make([]byte, 1<<20)
	for i := range v {
		v[i] = byte(i)
	}
	for range 20 {
		pe.Add(nil, v, 0, nil)
	}
	var got PublishRequest
	require.NoError(t, proto.Unmarshal(sent(t, &pe), &got))
	require.Len(t, got.Records, 20)
	for _, rec := range got.Records {
		require.Equal(t, v, rec.Value)
	}
}

func BenchmarkPublishEncoder(b *testing.B) {
	v := make([]byte, 128)
	var pe PublishEncoder
	b.ReportAllocs()
	b.SetBytes(64 * 128)
	for b.Loop() {
		pe.Start("topic", nil)
		for range 64 {
			pe.Add(nil, v, 0, nil)
		}
		data, _ := Codec{}.Marshal(&pe)
		data.Free()
	}
}
