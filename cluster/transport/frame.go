package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"go.etcd.io/raft/v3/raftpb"
)

// Frame layout constants; part of the format (doc.go draws it).
const (
	frameHeaderSize = 8 // length uint32, CRC32C uint32
	frameCountSize  = 4 // message count uint32, first in the payload
	// frameOverhead is what a frame costs besides its messages.
	frameOverhead = frameHeaderSize + frameCountSize
	// minEntrySize is the smallest encoded message: a one-byte group, a
	// one-byte length and an empty message. It bounds a frame's count.
	minEntrySize = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// entrySize is the encoded size of one message of size bytes in group.
func entrySize(group uint64, size int) int {
	return uvarintLen(group) + uvarintLen(uint64(size)) + size
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// frameBuf builds frames into one reused buffer, so a writer encodes
// everything it drained and writes it with one call. A frame is opened by
// the first message added and closed by finish, or by add when the next
// message would take the frame over max.
type frameBuf struct {
	b      []byte
	max    int
	start  int    // offset of the open frame's header; -1 when none is open
	count  uint32 // messages in the open frame
	frames int    // frames closed since reset
}

func (f *frameBuf) reset(max int) {
	f.b, f.max, f.start, f.count, f.frames = f.b[:0], max, -1, 0, 0
}

// add appends one message whose size (from its Size method) is size. The
// caller made sure entrySize(group, size)+frameOverhead <= max. On an error
// (the message changed after it was sized) nothing is appended.
func (f *frameBuf) add(group uint64, m *raftpb.Message, size int) error {
	if f.start >= 0 && len(f.b)-f.start+entrySize(group, size) > f.max {
		f.finish()
	}
	if f.start < 0 {
		f.start = len(f.b)
		f.b = append(f.b, make([]byte, frameOverhead)...)
	}
	mark := len(f.b)
	f.b = binary.AppendUvarint(f.b, group)
	f.b = binary.AppendUvarint(f.b, uint64(size))
	body := len(f.b)
	f.b = slices.Grow(f.b, size)[:body+size]
	n, err := m.MarshalToSizedBuffer(f.b[body:])
	if err == nil && n != size {
		err = fmt.Errorf("transport: message of group %d changed after Send: %d bytes, sized %d", group, n, size)
	}
	if err != nil {
		f.b = f.b[:mark]
		return err
	}
	f.count++
	return nil
}

// finish closes the open frame, if any: it fills in the length, the count
// and the checksum.
func (f *frameBuf) finish() {
	if f.start < 0 {
		return
	}
	frame := f.b[f.start:]
	binary.BigEndian.PutUint32(frame[frameHeaderSize:], f.count)
	payload := frame[frameHeaderSize:]
	binary.BigEndian.PutUint32(frame[0:], uint32(len(payload)))
	binary.BigEndian.PutUint32(frame[4:], crc32.Checksum(payload, castagnoli))
	f.start, f.count = -1, 0
	f.frames++
}

// parseHeader checks a frame header against the reader's limit and
// returns the payload's length and checksum.
func parseHeader(h []byte, max int) (n int, sum uint32, err error) {
	length := binary.BigEndian.Uint32(h[0:])
	if uint64(length)+frameHeaderSize > uint64(max) {
		return 0, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, uint64(length)+frameHeaderSize, max)
	}
	if length < frameCountSize {
		return 0, 0, fmt.Errorf("%w: payload of %d bytes", ErrMalformed, length)
	}
	return int(length), binary.BigEndian.Uint32(h[4:]), nil
}

// decodeFrame decodes the first frame of b. It returns n == 0 and no error
// when b does not hold a whole frame yet. It never panics, whatever b
// holds.
func decodeFrame(b []byte, max int) (envs []Envelope, n int, err error) {
	if len(b) < frameHeaderSize {
		return nil, 0, nil
	}
	length, sum, err := parseHeader(b, max)
	if err != nil {
		return nil, 0, err
	}
	if len(b) < frameHeaderSize+length {
		return nil, 0, nil
	}
	payload := b[frameHeaderSize : frameHeaderSize+length]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, ErrChecksum
	}
	envs, err = decodePayload(payload)
	return envs, frameHeaderSize + length, err
}

// decodePayload decodes a checked payload into new envelopes. The
// messages do not alias p (protobuf copies bytes fields), so the caller
// may reuse p.
func decodePayload(p []byte) ([]Envelope, error) {
	count := binary.BigEndian.Uint32(p)
	p = p[frameCountSize:]
	if uint64(count) > uint64(len(p)/minEntrySize) {
		return nil, fmt.Errorf("%w: %d messages in %d bytes", ErrMalformed, count, len(p))
	}
	// The count is the peer's word: grow past a small start rather than
	// trust it with a large allocation.
	envs := make([]Envelope, 0, min(count, 256))
	for i := uint32(0); i < count; i++ {
		group, k := binary.Uvarint(p)
		if k <= 0 {
			return nil, fmt.Errorf("%w: message %d: bad group", ErrMalformed, i)
		}
		p = p[k:]
		size, k := binary.Uvarint(p)
		if k <= 0 || size > uint64(len(p)-k) {
			return nil, fmt.Errorf("%w: message %d: bad length", ErrMalformed, i)
		}
		p = p[k:]
		var m raftpb.Message
		if err := m.Unmarshal(p[:size]); err != nil {
			return nil, fmt.Errorf("%w: message %d: %w", ErrMalformed, i, err)
		}
		p = p[size:]
		envs = append(envs, Envelope{Group: group, Msg: m})
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last message", ErrMalformed, len(p))
	}
	return envs, nil
}

// frameReader reads frames from a connection into one reused buffer.
type frameReader struct {
	r   *bufio.Reader
	max int
	hdr [frameHeaderSize]byte
	buf []byte
}

// bigBuffer is the capacity above which a connection's read buffer, or a
// peer's write buffer, is let go after use, so one large frame does not
// pin memory per connection.
const bigBuffer = 4 << 20

// next returns the next frame's payload, checked against its CRC. The
// payload is valid until the next call.
func (fr *frameReader) next() ([]byte, error) {
	if cap(fr.buf) > bigBuffer {
		fr.buf = nil
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, err
	}
	n, sum, err := parseHeader(fr.hdr[:], fr.max)
	if err != nil {
		return nil, err
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		return nil, err
	}
	if crc32.Checksum(fr.buf, castagnoli) != sum {
		return nil, ErrChecksum
	}
	return fr.buf, nil
}
