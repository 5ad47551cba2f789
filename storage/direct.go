package storage

import (
	"errors"
	"io"
	"unsafe"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Appends go to the active segment with direct I/O (O_DIRECT): the batch
// is copied once into an aligned buffer and written by DMA, bypassing the
// page cache. On the development machine buffered writes sustained
// 486 MB/s at a full core of CPU (page-cache copies and reclaim), direct
// writes of the same 256 KiB blocks 1848 MB/s at 0.38 of a core.
//
// Direct I/O writes whole aligned blocks, so the partial block at the end
// of the segment is kept in memory (the tail) and written again, padded
// with zeros, with each append. The file is therefore up to one block
// longer than the log; readers stop at the logical size, sealing and a
// clean close truncate the padding away, and after a crash recovery cuts
// the zeros like any torn tail. Reads use a second, buffered handle; Linux
// keeps the page cache coherent with direct writes. Where the file system
// refuses O_DIRECT (tmpfs), the segment falls back to buffered writes.
const directAlign = 4096

// tailWriter writes a segment's appends with direct I/O, through a
// handle opened with O_DIRECT that the segment's FileCache entry holds
// (and may close while idle: the partial block stays here).
type tailWriter struct {
	buf  []byte // aligned; buf[:head] is the partial last block
	head int
}

// newTailWriter returns the tail writer of a segment whose logical size
// is size, loading its partial last block through read.
func newTailWriter(read vfs.File, size int64) (*tailWriter, error) {
	w := &tailWriter{}
	w.grow(directAlign)
	w.head = int(size % directAlign)
	if w.head > 0 {
		if _, err := read.ReadAt(w.buf[:w.head], size-int64(w.head)); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return w, nil
}

// alignedBuf returns n bytes whose address is a multiple of directAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[off : off+n : off+n]
}

// grow makes buf hold at least n bytes, keeping the partial block.
func (w *tailWriter) grow(n int) {
	if len(w.buf) >= n {
		return
	}
	nb := alignedBuf(alignUp(max(n, 2*len(w.buf))))
	copy(nb, w.buf[:w.head])
	w.buf = nb
}

func alignUp(n int) int { return (n + directAlign - 1) &^ (directAlign - 1) }

// write appends batches at logical position pos (the segment's size): the
// partial block and the batches, padded to whole blocks, in one direct
// write through f. seal, if not nil, seals each batch on its way into the
// buffer (no copy more than a plain log's).
func (w *tailWriter) write(f vfs.File, batches []wire.Batch, pos int64, seal *sealer) error {
	total := 0
	for _, b := range batches {
		total += storedSize(b, seal != nil)
	}
	end := w.head + total
	n := alignUp(end)
	w.grow(n)
	at := w.head
	if seal != nil {
		for _, b := range batches {
			at += seal.put(w.buf[at:], b)
		}
	} else {
		for _, b := range batches {
			at += copy(w.buf[at:], b)
		}
	}
	clear(w.buf[end:n])
	written, err := f.WriteAt(w.buf[:n], pos-int64(w.head))
	if err == nil && written < n {
		err = io.ErrShortWrite
	}
	if err != nil {
		return err // the caller cuts the file back to pos and resets the tail
	}
	newHead := int((pos + int64(total)) % directAlign)
	copy(w.buf[:newHead], w.buf[end-newHead:end])
	w.head = newHead
	return nil
}

// reset reloads the partial block at pos after a failed write left the
// buffer holding bytes that were cut off the file.
func (w *tailWriter) reset(pos int64, read vfs.File) {
	w.head = int(pos % directAlign)
	if w.head > 0 {
		_, _ = read.ReadAt(w.buf[:w.head], pos-int64(w.head))
	}
}
