package ratatoskrv1

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func randomBytes(r *rand.Rand) []byte {
	if r.IntN(4) == 0 {
		return nil
	}
	b := make([]byte, r.IntN(40))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randomHeaders(r *rand.Rand) []*Header {
	var hs []*Header
	for range r.IntN(3) {
		hs = append(hs, &Header{Key: string(rune('a' + r.IntN(26))), Value: randomBytes(r)})
	}
	return hs
}

func randomPublish(r *rand.Rand) *PublishRequest {
	m := &PublishRequest{Topic: "t" + string(rune('a'+r.IntN(26))), Id: r.Uint64()}
	if r.IntN(2) == 0 {
		p := int32(r.IntN(1000)) - 10
		m.Partition = &p
	}
	for range r.IntN(6) {
		m.Records = append(m.Records, &Record{Key: randomBytes(r), Value: randomBytes(r), Headers: randomHeaders(r),
			TimestampNs: r.Int64() - r.Int64()})
	}
	return m
}

func randomSubscribe(r *rand.Rand) *SubscribeResponse {
	m := &SubscribeResponse{}
	for range r.IntN(6) {
		m.Records = append(m.Records, &Delivery{Partition: int32(r.IntN(100)), Offset: r.Int64(), Key: randomBytes(r),
			Value: randomBytes(r), Headers: randomHeaders(r), TimestampNs: r.Int64() - r.Int64()})
	}
	return m
}

// Codec decodes what the proto codec encodes to what proto.Unmarshal
// makes of it, reusing one message for many (with more records, then
// fewer, than the last), and refuses what proto.Unmarshal refuses.
func TestCodecMatchesProtoUnmarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var pub PublishRequest
	var sub SubscribeResponse
	for range 2000 {
		for _, pair := range []struct{ in, reused, want proto.Message }{
			{randomPublish(r), &pub, &PublishRequest{}},
			{randomSubscribe(r), &sub, &SubscribeResponse{}},
		} {
			b, err := proto.Marshal(pair.in)
			require.NoError(t, err)
			require.NoError(t, proto.Unmarshal(b, pair.want))
			require.NoError(t, Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, pair.reused))
			// Bytes fields: proto3 does not tell nil from empty.
			normalize(pair.want)
			normalize(pair.reused)
			require.True(t, proto.Equal(pair.want, pair.reused), "%v\n%v", pair.want, pair.reused)

			// Cut short or corrupted, it fails where proto fails.
			if len(b) > 1 {
				cut := b[:r.IntN(len(b)-1)+1]
				cut = append([]byte(nil), cut...)
				if r.IntN(2) == 0 {
					cut[r.IntN(len(cut))] ^= byte(1 + r.IntN(255))
				}
				fresh := pair.want.ProtoReflect().New().Interface()
				perr := proto.Unmarshal(cut, fresh)
				cerr := Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(cut)}, pair.reused)
				if perr != nil {
					// proto also refuses invalid UTF-8, which Codec lets
					// through: only the other way round is a bug.
					continue
				}
				require.NoError(t, cerr, "proto decodes %x", cut)
			}
		}
	}
}

// normalize drops what Codec does not keep: unknown fields, and the
// difference between nil and empty bytes, which proto3 does not make.
func normalize(m proto.Message) {
	discardUnknown(m.ProtoReflect())
	switch m := m.(type) {
	case *PublishRequest:
		for _, r := range m.Records {
			r.Key, r.Value = nilIfEmpty(r.Key), nilIfEmpty(r.Value)
			for _, h := range r.Headers {
				h.Value = nilIfEmpty(h.Value)
			}
		}
	case *SubscribeResponse:
		for _, d := range m.Records {
			d.Key, d.Value = nilIfEmpty(d.Key), nilIfEmpty(d.Value)
			for _, h := range d.Headers {
				h.Value = nilIfEmpty(h.Value)
			}
		}
	}
}

func discardUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() != nil && fd.IsList() {
			for i := range v.List().Len() {
				discardUnknown(v.List().Get(i).Message())
			}
		}
		return true
	})
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// FuzzCodec: no input makes Codec panic, and what it accepts is what
// proto accepts, or invalid UTF-8 in a string.
func FuzzCodec(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		b, _ := proto.Marshal(randomPublish(r))
		f.Add(b)
		b, _ = proto.Marshal(randomSubscribe(r))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&PublishRequest{}, &SubscribeResponse{}} {
			want := m.ProtoReflect().New().Interface()
			perr := proto.Unmarshal(b, want)
			cerr := Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(append([]byte(nil), b...))}, m)
			if perr != nil {
				continue // invalid UTF-8 in a string is proto's refusal only
			}
			require.NoError(t, cerr, "proto decodes %x", b)
			normalize(want)
			normalize(m)
			require.True(t, proto.Equal(want, m), "%x:\n%v\n%v", b, want, m)
		}
	})
}
