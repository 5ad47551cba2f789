package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// encodeFrames encodes envs the way a peer's writer does, frames of at
// most max bytes.
func encodeFrames(t testing.TB, envs []Envelope, max int) ([]byte, int) {
	var f frameBuf
	f.reset(max)
	for _, e := range envs {
		require.NoError(t, f.add(e.Group, &e.Msg, e.Msg.Size()))
	}
	f.finish()
	return f.b, f.frames
}

func testEnvs(n int) []Envelope {
	envs := make([]Envelope, n)
	for i := range envs {
		envs[i] = Envelope{Group: uint64(i * 997), Msg: testMsg(1, 2, uint64(i), i%50)}
	}
	return envs
}

// decodeAll decodes every frame of b with decodeFrame.
func decodeAll(b []byte, max int) (envs []Envelope, frames int, err error) {
	for len(b) > 0 {
		got, n, err := decodeFrame(b, max)
		if err != nil {
			return envs, frames, err
		}
		if n == 0 {
			return envs, frames, io.ErrUnexpectedEOF
		}
		envs = append(envs, got...)
		frames++
		b = b[n:]
	}
	return envs, frames, nil
}

func requireSameEnvs(t *testing.T, want, got []Envelope) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].Group, got[i].Group, "envelope %d", i)
		require.True(t, msgEqual(want[i].Msg, got[i].Msg), "envelope %d: %v != %v", i, want[i].Msg, got[i].Msg)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	envs := testEnvs(300)
	b, frames := encodeFrames(t, envs, DefaultMaxFrameBytes)
	require.Equal(t, 1, frames)
	got, n, err := decodeAll(b, DefaultMaxFrameBytes)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	requireSameEnvs(t, envs, got)

	// A small limit splits the same messages into several frames, each
	// within it, in one buffer.
	b, frames = encodeFrames(t, envs, 1024)
	require.Greater(t, frames, 5)
	got, n, err = decodeAll(b, 1024)
	require.NoError(t, err)
	require.Equal(t, frames, n)
	requireSameEnvs(t, envs, got)

	// The reader agrees with the slice decoder.
	fr := frameReader{r: bufio.NewReader(bytes.NewReader(b)), max: 1024}
	var viaReader []Envelope
	for {
		p, err := fr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		e, err := decodePayload(p)
		require.NoError(t, err)
		viaReader = append(viaReader, e...)
	}
	requireSameEnvs(t, envs, viaReader)
}

// A nil message travels as an empty one.
func TestFrameNilMessage(t *testing.T) {
	b, _ := encodeFrames(t, []Envelope{{Group: 7}}, 1024)
	got, _, err := decodeAll(b, 1024)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, uint64(7), got[0].Group)
	require.True(t, msgEqual(raftpb.Message{}, got[0].Msg))
}

// rawFrame frames payload with a correct length and checksum.
func rawFrame(payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

// badFrames are frames each broken in one way, by the error expected.
func badFrames(t testing.TB) map[string]struct {
	frame []byte
	err   error
} {
	good, _ := encodeFrames(t, testEnvs(3), 1<<16)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-1] ^= 0xff
	msg, err := testMsgBytes(testMsg(1, 2, 3, 4))
	require.NoError(t, err)
	entry := func(group uint64, n int, body []byte) []byte {
		b := binary.AppendUvarint(nil, group)
		b = binary.AppendUvarint(b, uint64(n))
		return append(b, body...)
	}
	count := func(n uint32, rest ...[]byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	return map[string]struct {
		frame []byte
		err   error
	}{
		"checksum":          {corrupt, ErrChecksum},
		"short payload":     {rawFrame([]byte{0, 0}), ErrMalformed},
		"count too large":   {rawFrame(count(1000, entry(1, len(msg), msg))), ErrMalformed},
		"count too small":   {rawFrame(count(1, entry(1, len(msg), msg), entry(2, len(msg), msg))), ErrMalformed},
		"length past end":   {rawFrame(count(1, entry(1, len(msg)+10, msg))), ErrMalformed},
		"bad group varint":  {rawFrame(count(1, bytes.Repeat([]byte{0xff}, 11))), ErrMalformed},
		"not a message":     {rawFrame(count(1, entry(1, 3, []byte{0xff, 0xff, 0xff}))), ErrMalformed},
		"trailing bytes":    {rawFrame(count(1, entry(1, len(msg), msg), []byte{1, 2, 3})), ErrMalformed},
		"over the limit":    {binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1<<30), 0), ErrFrameTooLarge},
		"length at maximum": {binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0xffffffff), 0), ErrFrameTooLarge},
	}
}

func TestFrameRejects(t *testing.T) {
	for name, c := range badFrames(t) {
		t.Run(name, func(t *testing.T) {
			_, _, err := decodeFrame(c.frame, 1<<16)
			require.ErrorIs(t, err, c.err)
			fr := frameReader{r: bufio.NewReader(bytes.NewReader(c.frame)), max: 1 << 16}
			p, err := fr.next()
			if err == nil {
				_, err = decodePayload(p)
			}
			require.ErrorIs(t, err, c.err)
			require.True(t, isFormat(err))
		})
	}
}

// FuzzDecodeFrame feeds arbitrary bytes to both decoders: the slice
// decoder and the connection's reader, which gets its input in two parts
// split where the fuzzer says. Neither may panic, they must agree, and
// whatever decodes must encode and decode to the same messages.
func FuzzDecodeFrame(f *testing.F) {
	good, _ := encodeFrames(f, testEnvs(5), 1<<16)
	f.Add(good, uint16(0))
	f.Add(good, uint16(len(good)/2))
	small, _ := encodeFrames(f, testEnvs(40), 256)
	f.Add(small, uint16(100))
	for _, c := range badFrames(f) {
		f.Add(c.frame, uint16(3))
	}
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		sliceEnvs, sliceFrames, _ := decodeAll(data, max)

		cut := min(int(split), len(data))
		r := io.MultiReader(bytes.NewReader(data[:cut]), bytes.NewReader(data[cut:]))
		fr := frameReader{r: bufio.NewReaderSize(r, 16), max: max}
		var readerEnvs []Envelope
		readerFrames := 0
		for {
			p, err := fr.next()
			if err != nil {
				break
			}
			e, err := decodePayload(p)
			if err != nil {
				break
			}
			readerEnvs = append(readerEnvs, e...)
			readerFrames++
		}
		if sliceFrames != readerFrames || len(sliceEnvs) != len(readerEnvs) {
			t.Fatalf("decoders disagree: %d frames %d messages vs %d frames %d messages",
				sliceFrames, len(sliceEnvs), readerFrames, len(readerEnvs))
		}
		if len(sliceEnvs) == 0 {
			return
		}
		again, _ := encodeFrames(t, sliceEnvs, max)
		back, _, err := decodeAll(again, max)
		if err != nil {
			t.Fatalf("re-encoded frames do not decode: %v", err)
		}
		if len(back) != len(sliceEnvs) {
			t.Fatalf("re-encoded %d messages, decoded %d", len(sliceEnvs), len(back))
		}
		for i := range back {
			if back[i].Group != sliceEnvs[i].Group || !msgEqual(back[i].Msg, sliceEnvs[i].Msg) {
				t.Fatalf("message %d changed in a round trip", i)
			}
		}
	})
}
