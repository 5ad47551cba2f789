package server

import (
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// inbound is the read side of a connection's buffer, as gnet.Conn offers
// it: a session takes frames out of it without the transport knowing the
// protocol. Peek and Read copy when the buffered bytes wrap around.
type inbound interface {
	InboundBuffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Read(p []byte) (int, error)
}

// decodeStep is what frameDecoder.next found.
type decodeStep uint8

const (
	// needMore: no whole frame yet; call next again after the next read.
	needMore decodeStep = iota
	// gotFrame: a whole frame other than a direct Publish, in place in the
	// inbound buffer; handle it, then discard it with consume.
	gotFrame
	// gotPublish: a whole Publish frame, read into a buffer the caller now
	// owns.
	gotPublish
	// publishStarts: half a Publish frame has arrived. The caller either
	// calls startPublish, which claims the frame's buffer, or stops
	// reading (memory is short) and calls next again later.
	publishStarts
	// badHeader: the stream is broken; the error says how.
	badHeader
)

// frameDecoder takes frames out of a connection's inbound buffer, resuming
// wherever the previous read stopped. It is the pure part of a session's
// read side: it decodes and holds a half-read Publish, and does nothing
// with the frames.
//
// A Publish is read straight into a pooled buffer of its exact size, even
// across many reads, so its bytes are copied once from the network buffer
// and never again; the buffer is claimed only once half the frame has
// arrived, so what a connection makes the broker allocate stays within
// twice what it sent. Other frames are handed out in place once whole.
type frameDecoder struct {
	pub  *storage.Buf // a Publish being read, pubN bytes so far
	pubN int
}

// next decodes what in holds. direct says whether a Publish is read into
// its own buffer (after the handshake); before that it is an ordinary frame.
func (d *frameDecoder) next(in inbound, maxFrame uint32, direct bool) (decodeStep, wire.Frame, *storage.Buf, error) {
	if d.pub != nil {
		n, _ := in.Read(d.pub.B[d.pubN:])
		if d.pubN += n; d.pubN < len(d.pub.B) {
			return needMore, wire.Frame{}, nil, nil
		}
		b := d.pub
		d.pub, d.pubN = nil, 0
		return gotPublish, wire.Frame{}, b, nil
	}
	if in.InboundBuffered() < wire.HeaderSize {
		return needMore, wire.Frame{}, nil, nil
	}
	hb, _ := in.Peek(wire.HeaderSize)
	h, err := wire.ParseHeader(hb, maxFrame)
	if err != nil {
		return badHeader, wire.Frame{}, nil, err
	}
	have := in.InboundBuffered()
	if h.Type == wire.TypePublish && direct {
		// Memory as the bytes arrive: the buffer comes once half the
		// frame is here; until then its bytes wait where they are.
		if have < int(h.Length) && have < int(h.Length)/2 {
			return needMore, wire.Frame{}, nil, nil
		}
		return publishStarts, wire.Frame{Header: h}, nil, nil
	}
	if have < int(h.Length) {
		return needMore, wire.Frame{}, nil, nil
	}
	raw, _ := in.Peek(int(h.Length))
	return gotFrame, wire.Frame{Header: h, Body: raw[wire.HeaderSize:]}, nil, nil
}

// startPublish claims the buffer of the Publish next reported by
// publishStarts; the frame's bytes go into it from the following next on.
func (d *frameDecoder) startPublish(h wire.Header) {
	d.pub = storage.NewBuf(int(h.Length))
}

// consume discards the frame gotFrame handed out, once it is handled.
func (d *frameDecoder) consume(in inbound, f wire.Frame) {
	_, _ = in.Discard(int(f.Length))
}

// holding is the size of the buffer of a half-read Publish, if any.
func (d *frameDecoder) holding() int {
	if d.pub == nil {
		return 0
	}
	return len(d.pub.B)
}

// release frees a half-read Publish.
func (d *frameDecoder) release() {
	if d.pub != nil {
		d.pub.Release()
		d.pub, d.pubN = nil, 0
	}
}
