package ratatoskrv1

// This file is written by hand; the rest of the package is generated.

import (
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The encoders below write the two messages that carry records in bulk
// straight from the caller's bytes into a pooled buffer, which Codec then
// hands to gRPC as it is: no Record or Delivery struct per record, no
// size pass over a struct tree, and no second copy at Marshal. A gRPC
// stream's SendMsg takes them in place of the message they encode.

// pool is where the encoders' buffers come from and, once gRPC has written
// them, go back to. Unlike gRPC's default pool it does not zero a buffer
// it hands out: every user here (the encoders, and gRPC's reads into the
// buffers it gets from BufferPool) overwrites what it uses.
var pool = &dirtyPool{}

// BufferPool is a gRPC buffer pool that does not clear buffers: for
// experimental.BufferPool and experimental.WithBufferPool. gRPC's default
// pool clears every buffer it hands out, which a profile of a busy stream
// showed as a tenth of the process's time; gRPC fills what it reads into
// and what it marshals into, so the clearing buys nothing there.
func BufferPool() mem.BufferPool { return pool }

// dirtyPool keeps buffers in size classes of powers of two from 256 B to
// 4 MiB; larger ones are allocated and dropped.
type dirtyPool struct {
	classes [minClass + numClasses]sync.Pool
}

const (
	minClass   = 8 // 256 B
	numClasses = 15
)

func class(n int) int {
	c := minClass
	for 1<<c < n {
		c++
	}
	return c
}

func (p *dirtyPool) Get(n int) *[]byte {
	c := class(n)
	if c >= minClass+numClasses {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<c)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minClass || c&(c-1) != 0 {
		return // not one of ours
	}
	k := class(c)
	if k >= minClass+numClasses {
		return
	}
	p.classes[k].Put(b)
}

// encoder is a pooled buffer being filled with one message.
type encoder struct {
	buf *[]byte
	// last is the size of the last message sent: the next starts with
	// that room, rather than growing to it by doubling and copying.
	last int
}

// grow makes room for n more bytes, moving to a larger pooled buffer.
func (e *encoder) grow(n int) []byte {
	if e.buf == nil {
		e.buf = pool.Get(max(n, e.last, 4096))
		*e.buf = (*e.buf)[:0]
	}
	b := *e.buf
	if len(b)+n <= cap(b) {
		return b
	}
	nb := pool.Get(max(2*cap(b), len(b)+n))
	*nb = append((*nb)[:0], b...)
	pool.Put(e.buf)
	e.buf = nb
	return *nb
}

func (e *encoder) len() int {
	if e.buf == nil {
		return 0
	}
	return len(*e.buf)
}

// take hands the buffer over to gRPC, which returns it to pool once it is
// written; the encoder starts anew.
func (e *encoder) take() mem.BufferSlice {
	if e.buf == nil {
		return nil
	}
	b := e.buf
	e.buf, e.last = nil, len(*b)
	return mem.BufferSlice{mem.NewBuffer(b, pool)}
}

// release returns the buffer to the pool without sending it.
func (e *encoder) release() {
	if e.buf != nil {
		pool.Put(e.buf)
		e.buf = nil
	}
}

// headersSize is the encoded size of hs as repeated Header fields of
// number num, and the size of each.
func headersSize(hs []*Header) int {
	n := 0
	for _, h := range hs {
		s := headerSize(h)
		n += 1 + protowire.SizeVarint(uint64(s)) + s
	}
	return n
}

func headerSize(h *Header) int {
	n := 0
	if h.Key != "" {
		n += 1 + protowire.SizeBytes(len(h.Key))
	}
	if len(h.Value) > 0 {
		n += 1 + protowire.SizeBytes(len(h.Value))
	}
	return n
}

func appendHeaders(b []byte, num protowire.Number, hs []*Header) []byte {
	for _, h := range hs {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(headerSize(h)))
		if h.Key != "" {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, h.Key)
		}
		if len(h.Value) > 0 {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, h.Value)
		}
	}
	return b
}

// tagged is the size of a field of number below 16 (one tag byte).
func bytesSize(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func varintSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// PublishEncoder writes a PublishRequest record by record. Start begins a
// request; Add appends a record; SendMsg with the encoder sends it (Codec
// writes Id last, which proto allows) and leaves the encoder empty for the
// next Start. The record bytes are copied as they are added, so the
// caller may reuse them at once. It is not safe for concurrent use.
type PublishEncoder struct {
	e       encoder
	records int
	id      uint64
}

// Start begins a request for topic and, when partition is not nil, that
// partition, dropping anything added and not sent.
func (p *PublishEncoder) Start(topic string, partition *int32) {
	p.Reset()
	b := p.e.grow(len(topic) + 32)
	if topic != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, topic)
	}
	if partition != nil {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(*partition)))
	}
	*p.e.buf = b
}

// Add appends a record. An empty key is no key, as in PublishRequest.
func (p *PublishEncoder) Add(key, value []byte, timestampNs int64, headers []*Header) {
	n := bytesSize(key) + bytesSize(value) + headersSize(headers) + varintSize(uint64(timestampNs))
	b := p.e.grow(1 + protowire.SizeVarint(uint64(n)) + n)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendBytesField(b, 1, key)
	b = appendBytesField(b, 2, value)
	b = appendHeaders(b, 3, headers)
	b = appendVarintField(b, 4, uint64(timestampNs))
	*p.e.buf = b
	p.records++
}

// Reset drops what was added and not sent, and the encoder's buffer.
func (p *PublishEncoder) Reset() {
	p.e.release()
	p.records, p.id = 0, 0
}

// SetID sets the request's id.
func (p *PublishEncoder) SetID(id uint64) { p.id = id }

// Records is how many records were added since Start.
func (p *PublishEncoder) Records() int { return p.records }

// Len is the encoded size so far.
func (p *PublishEncoder) Len() int { return p.e.len() }

// marshal finishes the request and hands its buffer over.
func (p *PublishEncoder) marshal() mem.BufferSlice {
	b := p.e.grow(11)
	*p.e.buf = appendVarintField(b, 4, p.id)
	p.records, p.id = 0, 0
	return p.e.take()
}

// SubscribeEncoder writes a SubscribeResponse delivery by delivery; SendMsg
// with the encoder sends it and leaves it empty. The bytes are copied as
// they are added. It is not safe for concurrent use.
type SubscribeEncoder struct {
	e       encoder
	records int
}

// Add appends a delivery.
func (s *SubscribeEncoder) Add(partition int32, offset int64, key, value []byte, timestampNs int64, headers []*Header) {
	n := varintSize(uint64(int64(partition))) + varintSize(uint64(offset)) + bytesSize(key) + bytesSize(value) +
		headersSize(headers) + varintSize(uint64(timestampNs))
	b := s.e.grow(1 + protowire.SizeVarint(uint64(n)) + n)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = appendVarintField(b, 1, uint64(int64(partition)))
	b = appendVarintField(b, 2, uint64(offset))
	b = appendBytesField(b, 3, key)
	b = appendBytesField(b, 4, value)
	b = appendHeaders(b, 5, headers)
	b = appendVarintField(b, 6, uint64(timestampNs))
	*s.e.buf = b
	s.records++
}

// Records is how many deliveries were added since the last send.
func (s *SubscribeEncoder) Records() int { return s.records }

// Len is the encoded size so far.
func (s *SubscribeEncoder) Len() int { return s.e.len() }

// Reset drops what was added and not sent.
func (s *SubscribeEncoder) Reset() {
	s.e.release()
	s.records = 0
}

func (s *SubscribeEncoder) marshal() mem.BufferSlice {
	s.records = 0
	if s.e.buf == nil {
		return mem.BufferSlice{} // an empty response
	}
	return s.e.take()
}
