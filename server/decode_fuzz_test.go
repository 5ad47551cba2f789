package server

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeInbound is a connection's inbound buffer without the connection:
// what gnet.Conn offers the decoder, over bytes the test feeds it.
type fakeInbound struct{ buf []byte }

func (in *fakeInbound) InboundBuffered() int { return len(in.buf) }

func (in *fakeInbound) Peek(n int) ([]byte, error) {
	if n > len(in.buf) {
		return in.buf, errors.New("peek beyond the buffered bytes")
	}
	return in.buf[:n], nil
}

func (in *fakeInbound) Discard(n int) (int, error) {
	n = min(n, len(in.buf))
	in.buf = in.buf[n:]
	return n, nil
}

func (in *fakeInbound) Read(p []byte) (int, error) {
	n := copy(p, in.buf)
	in.buf = in.buf[n:]
	return n, nil
}

// decodeMaxFrame is the frame limit the fuzzed decoder enforces.
const decodeMaxFrame = 1 << 20

// decodeRun feeds data to a frameDecoder in pieces and returns what it
// decoded: each frame in order, then the error that broke the stream, if
// any. Each byte of cuts is one read: its low 7 bits are how many bytes
// arrive (0 is a read that brings nothing new, as when the loop resumes a
// parked connection), and its high bit makes the reader refuse the first
// Publish buffer of that read, as when inbound memory is short; whatever
// the cuts leave arrives in one last read. It fails t when the decoder
// loops without progress, claims memory beyond what has arrived, or hands
// out anything but the stream's own bytes.
func decodeRun(t *testing.T, data, cuts []byte) (events []string) {
	var d frameDecoder
	defer d.release()
	in := &fakeInbound{}
	fed, done := 0, 0 // bytes arrived; bytes of the frames decoded
	direct := false   // a Hello went by: Publish frames are read into their own buffer
	feed := func(n int, refuse bool) (stop bool) {
		n = min(n, len(data)-fed)
		in.buf = append(in.buf, data[fed:fed+n]...)
		fed += n
		for steps := 0; ; steps++ {
			if steps > len(data)+2 {
				t.Fatalf("the decoder made %d steps in one read of %d bytes without asking for more", steps, n)
			}
			step, f, b, err := d.next(in, decodeMaxFrame, direct)
			if claimed := d.holding(); claimed > 2*(fed-done)+1 {
				t.Fatalf("a Publish buffer of %d bytes claimed after %d bytes of it arrived", claimed, fed-done)
			}
			var frame []byte
			switch step {
			case needMore:
				return false
			case badHeader:
				events = append(events, "error: "+err.Error())
				return true
			case publishStarts:
				if f.Type != wire.TypePublish || !direct {
					t.Fatalf("publishStarts for a %v frame (direct %v)", f.Type, direct)
				}
				if refuse {
					return false
				}
				d.startPublish(f.Header)
				continue
			case gotPublish:
				frame = bytes.Clone(b.B)
				b.Release()
			case gotFrame:
				frame = append(wire.AppendHeader(nil, f.Type, f.Flags, f.Corr, len(f.Body)), f.Body...)
				direct = direct || f.Type == wire.TypeHello
				d.consume(in, f)
			}
			// What came out is the next frame of the stream, byte for byte.
			if !bytes.Equal(frame, data[done:min(done+len(frame), len(data))]) {
				t.Fatalf("frame at byte %d is not the stream's bytes:\n got %x\nwant %x", done, frame, data[done:])
			}
			done += len(frame)
			events = append(events, fmt.Sprintf("step %d frame %x", step, frame))
		}
	}
	for _, c := range cuts {
		if feed(int(c&0x7f), c&0x80 != 0) {
			return events
		}
	}
	feed(len(data), false)
	return events
}

// FuzzSessionDecode feeds the broker's frame decoder (the session's read
// side) arbitrary bytes in pieces the fuzzer chooses, as nats-server fuzzes
// its parser with split input. However the input is split, the decoder must
// not panic or spin, must claim memory only as bytes arrive, and must give
// the same frames, or the same error, as when the input arrives whole.
func FuzzSessionDecode(f *testing.F) {
	for _, s := range decodeSeeds() {
		f.Add(s, []byte(nil))
		f.Add(s, []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1})
		f.Add(s, []byte{12, 0x80 | 7, 0, 30, 0x80 | 100, 3})
		f.Add(s, []byte{0x7f, 0x80, 5})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		whole := decodeRun(t, data, nil)
		split := decodeRun(t, data, cuts)
		if !slices.Equal(whole, split) {
			t.Fatalf("split at %v, the decoder gave\n%q\nwhole it gave\n%q", cuts, split, whole)
		}
	})
}

// decodeSeeds are streams a client sends, valid and not.
func decodeSeeds() [][]byte {
	frame := func(typ wire.Type, corr uint32, body []byte) []byte {
		return append(wire.AppendHeader(nil, typ, 0, corr, len(body)), body...)
	}
	hello := frame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 1, MaxVersion: 2, ClientName: "fuzz"}).Append(nil))
	var bb wire.BatchBuilder
	bb.Start(wire.AppendBatchPrefix(nil, "t", 0), -1, -1)
	bb.Append(1, []byte("k"), []byte("v"), []wire.RecordHeader{{Key: "h", Value: []byte("x")}})
	bb.Append(2, nil, bytes.Repeat([]byte("w"), 200), nil)
	publish := frame(wire.TypePublish, 3, bb.Finish())
	sub := frame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "t", Partition: wire.PartitionAny,
		Start: wire.Start{Kind: wire.StartOffset, Value: 7}}).Append(nil))
	create := frame(wire.TypeCreateTopic, 4, (&wire.CreateTopic{Name: "t", Partitions: 2}).Append(nil))
	ping := frame(wire.TypePing, 5, nil)
	valid := slices.Concat(hello, create, sub, publish, ping, publish, publish)

	short := wire.AppendHeader(nil, wire.TypePing, 0, 9, 0)
	short[3] = 4                                                           // a length below the header's own
	huge := wire.AppendHeader(nil, wire.TypePublish, 0, 9, decodeMaxFrame) // above the limit
	bigPub := wire.AppendHeader(nil, wire.TypePublish, 0, 9, 1000)         // announced, never sent
	emptyPub := frame(wire.TypePublish, 9, nil)
	return [][]byte{
		valid,
		slices.Concat(publish, hello, publish), // a Publish before the handshake is an ordinary frame
		slices.Concat(hello, publish[:len(publish)-5]),
		slices.Concat(hello, bigPub, bytes.Repeat([]byte{0xab}, 600)),
		slices.Concat(hello, emptyPub, ping),
		slices.Concat(hello, ping, short, ping),
		slices.Concat(hello, huge),
		slices.Concat(hello, frame(wire.Type(0xee), 6, []byte("junk")), ping),
		{},
		hello[:5],
	}
}
