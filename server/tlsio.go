package server

import (
	"io"
	"net"
	"sync"
)

// The TLS transport's byte paths (tls.go has the listener and the
// connection's goroutines): the writer's chunked queue, the inbound buffer
// the session decodes from, and rawIO, the socket wrapper under
// crypto/tls that reads and writes in large system calls.

// The writer.

// writeChunk is the size of the write buffer's pieces: flushed frames
// are copied into pooled chunks of this size, and each chunk is one
// tls.Conn.Write (crypto/tls cuts it into 16 records). One buffer grown by
// append was copied again at every doubling and, past a few MiB (a
// subscriber a quarter of its 64 MiB behind), allocated anew each turn:
// 40% of the broker's CPU in a 1→1 run.
const writeChunk = 256 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, writeChunk); return &b }}

// writev implements transport: the frames are copied into the write
// queue's chunks, which the writer writes.
func (t *tlsTransport) writev(iov [][]byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.werr != nil {
		return t.werr
	}
	for _, b := range iov {
		for len(b) > 0 {
			var c *[]byte
			if n := len(t.wq); n > 0 && len(*t.wq[n-1]) < writeChunk {
				c = t.wq[n-1]
			} else {
				c = chunkPool.Get().(*[]byte)
				t.wq = append(t.wq, c)
			}
			k := min(len(b), writeChunk-len(*c))
			*c = append(*c, b[:k]...)
			b = b[k:]
			t.wqBytes += k
		}
	}
	t.unsent.Store(int64(t.wqBytes + t.writing))
	t.wcond.Signal()
	return nil
}

// backlog implements transport: what the writer has not written yet.
func (t *tlsTransport) backlog() int {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	n := t.wqBytes + t.writing
	t.unsent.Store(int64(n))
	t.reported = n > 0
	return n
}

// unsentBytes implements transport.
func (t *tlsTransport) unsentBytes() int64 { return t.unsent.Load() }

// write is the writer goroutine: it writes the queued chunks, one
// tls.Conn.Write each, and closes the connection once asked and
// everything is written.
func (t *tlsTransport) write() {
	defer t.l.wg.Done()
	defer close(t.wdone)
	t.wmu.Lock()
	for {
		for len(t.wq) == 0 && !t.wclose {
			t.wcond.Wait()
		}
		if len(t.wq) == 0 {
			t.wmu.Unlock()
			_ = t.conn.Close() // close_notify, within closeGrace
			return
		}
		q := t.wq
		t.wq, t.wspare = t.wspare[:0], nil
		t.writing, t.wqBytes = t.wqBytes, 0
		t.wmu.Unlock()
		err := t.writeChunks(q)
		t.wmu.Lock()
		t.wspare = q[:0]
		if err != nil {
			t.werr = err
			releaseChunks(t.wq)
			t.wq, t.wqBytes = nil, 0
			t.unsent.Store(0)
			t.wmu.Unlock()
			_ = t.raw.Close() // the reader sees it and finishes
			return
		}
		if t.reported { // the outbox counts a backlog: tell it what is left
			t.wmu.Unlock()
			t.ScheduleFlush()
			t.wmu.Lock()
		}
	}
}

// writeChunks writes q and gives its chunks back, counting each written
// chunk off the backlog; after a failed write the rest are dropped.
func (t *tlsTransport) writeChunks(q []*[]byte) error {
	var err error
	for i, c := range q {
		n := len(*c)
		if err == nil {
			t.io.batch()
			_, err = t.conn.Write(*c)
			if ferr := t.io.flush(); err == nil {
				err = ferr
			}
		}
		*c = (*c)[:0]
		chunkPool.Put(c)
		q[i] = nil
		t.wmu.Lock()
		t.writing -= n
		t.unsent.Store(int64(t.wqBytes + t.writing))
		t.wmu.Unlock()
	}
	return err
}

func releaseChunks(q []*[]byte) {
	for i, c := range q {
		*c = (*c)[:0]
		chunkPool.Put(c)
		q[i] = nil
	}
}

// tlsInbound is a TLS connection's inbound buffer: buf[r:w] is read and
// not yet taken. The session (holding mu) takes from the front, moving r;
// the reader alone moves w and reads into buf[w:] without holding mu, so
// compacting and growing (which move what the session reads) happen under
// mu, on the reader.
type tlsInbound struct {
	buf  []byte
	r, w int
}

func (b *tlsInbound) buffered() int { return b.w - b.r }

// InboundBuffered implements inbound.
func (b *tlsInbound) InboundBuffered() int { return b.w - b.r }

// Peek implements inbound.
func (b *tlsInbound) Peek(n int) ([]byte, error) {
	if n > b.w-b.r {
		return b.buf[b.r:b.w], io.ErrShortBuffer
	}
	return b.buf[b.r : b.r+n], nil
}

// Discard implements inbound.
func (b *tlsInbound) Discard(n int) (int, error) {
	n = min(n, b.w-b.r)
	b.r += n
	return n, nil
}

// Read implements inbound.
func (b *tlsInbound) Read(p []byte) (int, error) {
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// inboundPool holds the inbound buffers of readBufferCap bytes that
// connections are not using. A connection holds one only while it has
// unprocessed bytes: an idle connection holds none, and a busy one takes
// the same buffer back from its P's cache on its next read instead of
// allocating (and zeroing) a fresh one; allocating them was a quarter of
// a TLS producer's broker CPU. A frame that needs more than readBufferCap
// at once (a large non-publish frame) gets a buffer of its own, let go
// once it is empty.
var inboundPool = sync.Pool{New: func() any { b := make([]byte, readBufferCap); return &b }}

// space returns at least min free bytes after w, compacting or growing
// the buffer. Under mu, on the reader.
func (b *tlsInbound) space(minFree int) []byte {
	if b.r == b.w {
		b.release()
	}
	if b.buf == nil {
		b.buf = *inboundPool.Get().(*[]byte)
	}
	if len(b.buf)-b.w >= minFree {
		return b.buf[b.w:]
	}
	n := b.w - b.r
	if len(b.buf)-n >= minFree {
		copy(b.buf, b.buf[b.r:b.w])
	} else {
		grown := make([]byte, max(2*len(b.buf), n+minFree))
		copy(grown, b.buf[b.r:b.w])
		b.putBack()
		b.buf = grown
	}
	b.r, b.w = 0, n
	return b.buf[b.w:]
}

// release gives the buffer back; it must hold nothing unprocessed.
func (b *tlsInbound) release() {
	b.putBack()
	b.buf, b.r, b.w = nil, 0, 0
}

func (b *tlsInbound) putBack() {
	if len(b.buf) == readBufferCap {
		buf := b.buf
		inboundPool.Put(&buf)
	}
}

// rawIO is the socket under crypto/tls. It reads in large reads:
// crypto/tls reads about one record (16 KiB) per read(2), which was a
// quarter of a TLS producer's broker CPU in system calls. The buffer is
// pooled and held only while it holds bytes, so an idle connection holds
// none. Only the connection's reader reads (crypto/tls reads under its own
// lock). And it writes a chunk's records in one write(2) (batch, then
// flush), where crypto/tls writes each record as it seals it.
type rawIO struct {
	net.Conn
	buf  *[]byte
	r, w int
	err  error // what the read that filled buf returned besides bytes

	// wmu orders every write: records held in a batch go out before any
	// written after it (a KeyUpdate crypto/tls answers from the reader,
	// say), as TLS's record sequence requires.
	wmu      sync.Mutex
	batching bool    // guarded by wmu
	out      *[]byte // the batch's records; guarded by wmu
}

// batch starts holding what crypto/tls writes, until flush.
func (c *rawIO) batch() {
	c.wmu.Lock()
	c.batching = true
	c.out = outPool.Get().(*[]byte)
	c.wmu.Unlock()
}

// flush writes what the batch holds in one write and ends it.
func (c *rawIO) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.batching = false
	var err error
	if len(*c.out) > 0 {
		_, err = c.Conn.Write(*c.out)
	}
	*c.out = (*c.out)[:0]
	outPool.Put(c.out)
	c.out = nil
	return err
}

// Write implements net.Conn for crypto/tls.
func (c *rawIO) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batching {
		*c.out = append(*c.out, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// outPool holds batches of records: a chunk and its records' overhead.
var outPool = sync.Pool{New: func() any { b := make([]byte, 0, writeChunk+writeChunk/16); return &b }}

var rawPool = sync.Pool{New: func() any { b := make([]byte, readBufferCap); return &b }}

func (c *rawIO) Read(p []byte) (int, error) {
	if c.r == c.w {
		if c.err != nil {
			err := c.err
			c.err = nil
			return 0, err
		}
		if len(p) >= readBufferCap {
			return c.Conn.Read(p)
		}
		buf := rawPool.Get().(*[]byte)
		n, err := c.Conn.Read(*buf)
		if n == 0 {
			rawPool.Put(buf)
			return 0, err
		}
		c.buf, c.r, c.w, c.err = buf, 0, n, err
	}
	n := copy(p, (*c.buf)[c.r:c.w])
	c.r += n
	if c.r == c.w {
		rawPool.Put(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
	return n, nil
}
