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
		require.True(t, proto.Equal(want, pbuf.request()), "publish buffer: want %v, got %v", want, pbuf.request())

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

// request is m as the PublishRequest it was decoded from.
func (m *PublishBuffer) request() *PublishRequest {
	r := &PublishRequest{Topic: m.Topic, Id: m.ID}
	if m.HasPartition {
		p := m.Partition
		r.Partition = &p
	}
	for _, fr := range m.Records {
		rec := &Record{Key: fr.Key, Value: fr.Value, TimestampNs: fr.TimestampNs}
		for _, h := range fr.Headers {
			rec.Headers = append(rec.Headers, &Header{Key: h.Key, Value: h.Value})
		}
		r.Records = append(r.Records, rec)
	}
	return r
}

// A PublishBuffer reused for many requests decodes each as proto does, and
// refuses what proto.Unmarshal refuses.
func TestPublishBufferMatchesProtoUnmarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var pbuf PublishBuffer
	for range 500 {
		want := randomPublish(r)
		b, err := proto.Marshal(want)
		require.NoError(t, err)
		require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &pbuf))
		require.True(t, proto.Equal(want, pbuf.request()), "want %v, got %v", want, pbuf.request())
		n := len(want.Topic)
		for _, rec := range want.Records {
			n += len(rec.Key) + len(rec.Value)
			for _, h := range rec.Headers {
				n += len(h.Key) + len(h.Value)
			}
		}
		require.Equal(t, n, pbuf.Bytes())
		// Cut short or corrupted: what proto decodes, PublishBuffer
		// decodes to the same (proto also refuses invalid UTF-8, which
		// Codec lets through, as TestCodecMatchesProtoUnmarshal says).
		if len(b) > 1 {
			bad := append([]byte(nil), b[:r.IntN(len(b)-1)+1]...)
			if r.IntN(2) == 0 {
				bad[r.IntN(len(bad))] ^= byte(1 + r.IntN(255))
			}
			var ref PublishRequest
			if proto.Unmarshal(bad, &ref) != nil {
				continue
			}
			require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &pbuf), "proto decodes %x", bad)
			got := pbuf.request()
			normalize(&ref)
			normalize(got)
			require.True(t, proto.Equal(&ref, got), "%v\n%v", &ref, got)
		}
	}
}

func BenchmarkPublishBufferDecode(b *testing.B) {
	req := &PublishRequest{Topic: "topic"}
	for range 2000 {
		req.Records = append(req.Records, &Record{Value: make([]byte, 128)})
	}
	data, err := proto.Marshal(req)
	require.NoError(b, err)
	var pbuf PublishBuffer
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &pbuf); err != nil {
			b.Fatal(err)
		}
	}
}
