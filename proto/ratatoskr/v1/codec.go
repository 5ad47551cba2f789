package ratatoskrv1

// This file is written by hand; the rest of the package is generated.

import (
	"errors"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Codec is gRPC's proto codec with a faster decoding of the two messages
// that carry records in bulk, PublishRequest and SubscribeResponse: the
// records' bytes alias one copy of the received message, and the Record
// and Delivery structs already in the message are filled again instead of
// allocated, so a message of many records costs a few allocations instead
// of a few per record. The caller that reuses a message must not keep its
// records' slices past the next decoding into it. Every other message, and
// every encoding, is the proto codec's.
//
// It is wire-compatible with the proto codec (same name, same bytes): a
// server takes it with grpc.ForceServerCodecV2, a client with
// grpc.ForceCodecV2.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Name is the proto codec's: the content subtype does not change.
func (Codec) Name() string { return proto.Name }

// Marshal hands over a PublishEncoder's or SubscribeEncoder's buffer;
// every other message is the proto codec's.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *PublishEncoder:
		return m.marshal(), nil
	case *SubscribeEncoder:
		return m.marshal(), nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *PublishRequest:
		return m.decode(data.Materialize())
	case *SubscribeResponse:
		return m.decode(data.Materialize())
	case *PublishBuffer:
		m.buf = copyOut(m.buf, data)
		return m.decode(m.buf)
	case *SubscribeBuffer:
		m.buf = copyOut(m.buf, data)
		return m.Response.decode(m.buf)
	}
	return protoCodec.Unmarshal(data, v)
}

// PublishBuffer is a PublishRequest decoded by Codec into flat slices,
// for a server that takes many: the received bytes are copied into a
// buffer of its own, and the records into a slice of values, both reused
// from one decoding to the next, so that a reused PublishBuffer allocates
// nothing once they are large enough (a PublishRequest allocates a copy
// of each message, and its records are pointers). The records' bytes
// alias the buffer until the next decoding.
type PublishBuffer struct {
	Topic string
	// Partition is the request's partition when HasPartition.
	Partition    int32
	HasPartition bool
	ID           uint64
	Records      []FlatRecord
	headers      []FlatHeader // every record's, which Records' slice
	buf          []byte
}

// FlatRecord is a Record as a value.
type FlatRecord struct {
	Key, Value  []byte
	TimestampNs int64
	Headers     []FlatHeader
	nheaders    int // while decoding
}

// FlatHeader is a Header as a value.
type FlatHeader struct {
	Key   string
	Value []byte
}

// Bytes is how many bytes the request's topic and records' keys, values
// and headers take.
func (m *PublishBuffer) Bytes() int {
	n := len(m.Topic)
	for i := range m.Records {
		r := &m.Records[i]
		n += len(r.Key) + len(r.Value)
	}
	for _, h := range m.headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// decode fills m from b.
func (m *PublishBuffer) decode(b []byte) error {
	clear(m.Records)
	clear(m.headers)
	m.Records, m.headers = m.Records[:0], m.headers[:0]
	m.Topic, m.Partition, m.HasPartition, m.ID = "", 0, false, 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, publishRequestTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			var v []byte
			v, k = bytesField(b)
			if m.Topic != string(v) { // the same topic as last time costs no allocation
				m.Topic = string(v)
			}
		case 2:
			var v []byte
			if v, k = bytesField(b); k < 0 {
				return errMalformed
			}
			m.Records = append(m.Records, FlatRecord{})
			if err := m.decodeRecord(&m.Records[len(m.Records)-1], v); err != nil {
				return err
			}
		case 3:
			var v uint64
			v, k = varintField(b)
			m.Partition, m.HasPartition = int32(v), true
		case 4:
			m.ID, k = varintField(b)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	// Records' headers are slices of m.headers, which may have moved as
	// it grew: they are set once it is complete.
	h := 0
	for i := range m.Records {
		r := &m.Records[i]
		n := r.nheaders
		r.Headers, r.nheaders = nil, 0
		if n > 0 {
			r.Headers = m.headers[h : h+n : h+n]
			h += n
		}
	}
	return nil
}

// decodeRecord fills r from b, its headers appended to m.headers; until
// decode ends, r.nheaders counts them.
func (m *PublishBuffer) decodeRecord(r *FlatRecord, b []byte) error {
	nh := 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, recordTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			r.Key, k = bytesField(b)
		case 2:
			r.Value, k = bytesField(b)
		case 3:
			var v []byte
			if v, k = bytesField(b); k < 0 {
				return errMalformed
			}
			var h Header
			if err := h.decode(v); err != nil {
				return err
			}
			m.headers = append(m.headers, FlatHeader{Key: h.Key, Value: h.Value})
			nh++
		case 4:
			var v uint64
			v, k = varintField(b)
			r.TimestampNs = int64(v)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	r.nheaders = nh
	return nil
}

// SubscribeBuffer is PublishBuffer's counterpart for a SubscribeResponse.
type SubscribeBuffer struct {
	Response SubscribeResponse
	buf      []byte
}

// copyOut copies data into buf, growing it when it must.
func copyOut(buf []byte, data mem.BufferSlice) []byte {
	n := data.Len()
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	data.CopyTo(buf)
	return buf
}

var errMalformed = errors.New("ratatoskr.v1: malformed message")

// field reads a field's tag; n < 0 is a malformed tag.
func field(b []byte) (protowire.Number, protowire.Type, int) { return protowire.ConsumeTag(b) }

// skip consumes an unknown field's value.
func skip(b []byte, num protowire.Number, typ protowire.Type) int {
	return protowire.ConsumeFieldValue(num, typ, b)
}

// bytesField consumes a length-delimited value.
func bytesField(b []byte) ([]byte, int) { return protowire.ConsumeBytes(b) }

// varintField consumes a varint value.
func varintField(b []byte) (uint64, int) { return protowire.ConsumeVarint(b) }

// known reports whether field num of a message whose fields 1..len(types)
// have those wire types is one to decode: a field of another number, or
// of the wrong wire type, is skipped as unknown, as proto.Unmarshal does.
func known(num protowire.Number, typ protowire.Type, types ...protowire.Type) bool {
	return num >= 1 && int(num) <= len(types) && types[num-1] == typ
}

const (
	varint = protowire.VarintType
	bytes  = protowire.BytesType
)

// The wire types of the decoded messages' fields, by number.
var (
	publishRequestTypes    = []protowire.Type{bytes, bytes, varint, varint}
	recordTypes            = []protowire.Type{bytes, bytes, bytes, varint}
	headerTypes            = []protowire.Type{bytes, bytes}
	subscribeResponseTypes = []protowire.Type{bytes}
	deliveryTypes          = []protowire.Type{varint, varint, bytes, bytes, bytes, varint}
)

// decode fills m from b, reusing m's records; their bytes alias b.
func (m *PublishRequest) decode(b []byte) error {
	recs := m.Records[:cap(m.Records)]
	n := 0
	m.Topic, m.Partition, m.Id = "", nil, 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, publishRequestTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			var v []byte
			v, k = bytesField(b)
			m.Topic = string(v)
		case 2:
			var v []byte
			if v, k = bytesField(b); k < 0 {
				return errMalformed
			}
			if n == len(recs) {
				recs = append(recs, &Record{})
				recs = recs[:cap(recs)]
			}
			if recs[n] == nil {
				recs[n] = &Record{}
			}
			if err := recs[n].decode(v); err != nil {
				return err
			}
			n++
		case 3:
			var v uint64
			v, k = varintField(b)
			p := int32(v)
			m.Partition = &p
		case 4:
			m.Id, k = varintField(b)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	m.Records = recs[:n]
	return nil
}

// decode fills r from b; its bytes alias b.
func (r *Record) decode(b []byte) error {
	hs := r.Headers[:cap(r.Headers)]
	nh := 0
	r.Key, r.Value, r.TimestampNs = nil, nil, 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, recordTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			r.Key, k = bytesField(b)
		case 2:
			r.Value, k = bytesField(b)
		case 3:
			var v []byte
			if v, k = bytesField(b); k < 0 {
				return errMalformed
			}
			hs = header(hs, nh)
			if err := hs[nh].decode(v); err != nil {
				return err
			}
			nh++
		case 4:
			var v uint64
			v, k = varintField(b)
			r.TimestampNs = int64(v)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	r.Headers = hs[:nh]
	return nil
}

// header makes hs[n] a Header to fill, growing hs when it must.
func header(hs []*Header, n int) []*Header {
	if n == len(hs) {
		hs = append(hs, &Header{})
		hs = hs[:cap(hs)]
	}
	if hs[n] == nil {
		hs[n] = &Header{}
	}
	return hs
}

// decode fills h from b; its value aliases b.
func (h *Header) decode(b []byte) error {
	h.Key, h.Value = "", nil
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, headerTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			var v []byte
			v, k = bytesField(b)
			h.Key = string(v)
		case 2:
			h.Value, k = bytesField(b)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	return nil
}

// decode fills m from b, reusing m's deliveries; their bytes alias b.
func (m *SubscribeResponse) decode(b []byte) error {
	recs := m.Records[:cap(m.Records)]
	n := 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		f := num
		if !known(num, typ, subscribeResponseTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			var v []byte
			if v, k = bytesField(b); k < 0 {
				return errMalformed
			}
			if n == len(recs) {
				recs = append(recs, &Delivery{})
				recs = recs[:cap(recs)]
			}
			if recs[n] == nil {
				recs[n] = &Delivery{}
			}
			if err := recs[n].decode(v); err != nil {
				return err
			}
			n++
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	m.Records = recs[:n]
	return nil
}

// decode fills d from b; its bytes alias b.
func (d *Delivery) decode(b []byte) error {
	hs := d.Headers[:cap(d.Headers)]
	nh := 0
	d.Partition, d.Offset, d.Key, d.Value, d.TimestampNs = 0, 0, nil, nil, 0
	for len(b) > 0 {
		num, typ, k := field(b)
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
		var v uint64
		f := num
		if !known(num, typ, deliveryTypes...) {
			f = 0 // unknown: skipped below
		}
		switch f {
		case 1:
			v, k = varintField(b)
			d.Partition = int32(v)
		case 2:
			v, k = varintField(b)
			d.Offset = int64(v)
		case 3:
			d.Key, k = bytesField(b)
		case 4:
			d.Value, k = bytesField(b)
		case 5:
			var hb []byte
			if hb, k = bytesField(b); k < 0 {
				return errMalformed
			}
			hs = header(hs, nh)
			if err := hs[nh].decode(hb); err != nil {
				return err
			}
			nh++
		case 6:
			v, k = varintField(b)
			d.TimestampNs = int64(v)
		default:
			k = skip(b, num, typ)
		}
		if k < 0 {
			return errMalformed
		}
		b = b[k:]
	}
	d.Headers = hs[:nh]
	return nil
}
