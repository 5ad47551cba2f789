package wire

import (
	"encoding/binary"
	"math"
)

// Decoder reads the fields of a body in order. It remembers the first error
// (a body that ends early or a length that does not fit) and returns zero
// values after it, so a caller reads every field and checks Err once.
// Byte-slice results alias the body: no allocation.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder returns a Decoder over body.
func NewDecoder(body []byte) Decoder { return Decoder{b: body} }

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

// Done returns the first error, or ErrMalformed when bytes remain: a body
// must be consumed exactly.
func (d *Decoder) Done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errTrailing
	}
	return d.err
}

var errTrailing = &Error{Code: CodeMalformed, Message: "trailing bytes after body"}

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShort
		d.b = nil
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

// U16 reads a big-endian uint16.
func (d *Decoder) U16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

// U32 reads a big-endian uint32.
func (d *Decoder) U32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// I32 reads a big-endian int32.
func (d *Decoder) I32() int32 { return int32(d.U32()) }

// I64 reads a big-endian int64.
func (d *Decoder) I64() int64 {
	if b := d.take(8); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

// Str16 reads a string with a uint16 length prefix, as a slice of the body.
func (d *Decoder) Str16() []byte { return d.take(int(d.U16())) }

// String16 reads a Str16 and copies it into a string (one allocation).
func (d *Decoder) String16() string { return string(d.Str16()) }

// Bytes32 reads bytes with a uint32 length prefix.
func (d *Decoder) Bytes32() []byte {
	n := d.U32()
	if n > math.MaxInt32 {
		d.take(-1)
		return nil
	}
	return d.take(int(n))
}

// Rest returns everything not read yet.
func (d *Decoder) Rest() []byte {
	if d.err != nil {
		return nil
	}
	b := d.b
	d.b = nil
	return b
}

// Remaining reports how many bytes are unread.
func (d *Decoder) Remaining() int { return len(d.b) }

// AppendStr16 appends s with a uint16 length prefix. Callers validate that s
// fits; longer strings are cut at 65535 bytes rather than corrupting the frame.
func AppendStr16(dst []byte, s string) []byte {
	if len(s) > math.MaxUint16 {
		s = s[:math.MaxUint16]
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// AppendBytes32 appends b with a uint32 length prefix.
func AppendBytes32(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

func appendU16(dst []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }
func appendI32(dst []byte, v int32) []byte  { return binary.BigEndian.AppendUint32(dst, uint32(v)) }
func appendI64(dst []byte, v int64) []byte  { return binary.BigEndian.AppendUint64(dst, uint64(v)) }
