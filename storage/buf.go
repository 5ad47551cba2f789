package storage

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/valyala/bytebufferpool"
)

// Size classes of pooled buffers: powers of two from 256 B to 8 MiB. Larger
// requests are allocated and left to the garbage collector.
const (
	minClassBits = 8
	maxClassBits = 23
	numClasses   = maxClassBits - minClassBits + 1
)

// classPools holds one bytebufferpool.Pool per size class, so a buffer
// handed out for a 200-byte batch is not a 4 MiB one and vice versa; each
// pool calibrates within its class.
var classPools [numClasses]bytebufferpool.Pool

var bufPool = sync.Pool{New: func() any { return new(Buf) }}

// live counts Bufs handed out and not yet released: one atomic add per
// batch, which tests use to prove that no path leaks a buffer.
var live atomic.Int64

// LiveBufs reports how many Bufs are outstanding.
func LiveBufs() int64 { return live.Load() }

// Buf is a pooled, reference-counted byte buffer holding one frame or batch.
// NewBuf returns it with one reference; every holder that keeps it past the
// current call takes another with Retain and gives it back with Release.
// The buffer must not be touched after the caller's last Release.
type Buf struct {
	B     []byte
	refs  atomic.Int32
	bb    *bytebufferpool.ByteBuffer
	class int
}

// NewBuf returns a Buf of length n (contents unspecified) with one reference.
func NewBuf(n int) *Buf {
	b := bufPool.Get().(*Buf)
	b.refs.Store(1)
	live.Add(1)
	b.class = sizeClass(n)
	if b.class < 0 {
		b.bb = nil
		b.B = make([]byte, n)
		return b
	}
	b.bb = classPools[b.class].Get()
	if size := 1 << (b.class + minClassBits); cap(b.bb.B) < size {
		b.bb.B = make([]byte, size)
	}
	b.B = b.bb.B[:n]
	return b
}

// sizeClass returns the index of the smallest class holding n bytes, or -1
// when n is above the largest class.
func sizeClass(n int) int {
	if n <= 1<<minClassBits {
		return 0
	}
	c := bits.Len(uint(n-1)) - minClassBits
	if c >= numClasses {
		return -1
	}
	return c
}

// Retain adds a reference.
func (b *Buf) Retain() {
	if b.refs.Add(1) <= 1 {
		panic("storage: Retain of a released Buf")
	}
}

// Release drops a reference; the last one returns the memory to its pool.
func (b *Buf) Release() {
	switch n := b.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("storage: Buf released more times than retained")
	}
	live.Add(-1)
	if b.bb != nil {
		b.bb.B = b.bb.B[:cap(b.bb.B)]
		classPools[b.class].Put(b.bb)
	}
	b.bb, b.B = nil, nil
	bufPool.Put(b)
}

// Refs reports the current reference count, for tests and assertions.
func (b *Buf) Refs() int32 { return b.refs.Load() }
