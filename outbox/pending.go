package outbox

import (
	"slices"
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/storage"
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// Pending is a drained batch of frames: iovecs ready for writev, and what to
// give back once they are written.
//
// While its outbox is parked (see Outbox), frames go to fixed-size blocks
// instead of IOV and refs: a subscriber that stopped reading may gather
// hundreds of thousands of frames, and growing one slice for them copies
// it whole at each doubling, in the publishing shard's pass, for every
// such subscriber at once. The writer's Take joins the blocks to IOV once,
// when the reader takes bytes again.
type Pending struct {
	IOV    [][]byte
	size   int // bytes in IOV when taken (writev may trim the slices)
	refs   []*storage.Buf
	chunks []*[]byte
	chunk  *[]byte // the chunk small frames are being copied into
	open   int     // start of the region of chunk the last iovec covers, -1 if none
	blocks []*frameBlock
}

// frameBlock holds frames queued while parked: their iovecs and, for those
// queued by reference, the buffers they lie in.
type frameBlock struct {
	iov  [][]byte
	refs []*storage.Buf
}

const blockFrames = MaxIOV

var blockPool = sync.Pool{New: func() any {
	return &frameBlock{iov: make([][]byte, 0, blockFrames), refs: make([]*storage.Buf, 0, blockFrames)}
}}

// maxKeptFrames bounds the frames a drained Pending keeps room for, so
// that a burst does not pin its slices' memory for the connection's life.
const maxKeptFrames = 4 * MaxIOV

// Bytes reports the total size of the iovecs.
func (p *Pending) Bytes() int {
	n := 0
	for _, b := range p.IOV {
		n += len(b)
	}
	return n
}

func (p *Pending) reset() {
	p.IOV = p.IOV[:0]
	p.open = -1
}

// park sends later frames to blocks (see Pending).
func (p *Pending) park() {
	if len(p.blocks) == 0 {
		p.blocks = append(p.blocks, blockPool.Get().(*frameBlock))
		p.open = -1
	}
}

// iovTail is the iovec list the next frame goes to, with room for it.
func (p *Pending) iovTail() (iov *[][]byte, refs *[]*storage.Buf) {
	if len(p.blocks) == 0 {
		return &p.IOV, &p.refs
	}
	b := p.blocks[len(p.blocks)-1]
	if len(b.iov) == cap(b.iov) || len(b.refs) == cap(b.refs) {
		b = blockPool.Get().(*frameBlock)
		p.blocks = append(p.blocks, b)
		p.open = -1
	}
	return &b.iov, &b.refs
}

func (p *Pending) appendRef(b *storage.Buf, frame []byte) {
	iov, refs := p.iovTail()
	*iov = append(*iov, frame)
	*refs = append(*refs, b)
	p.open = -1
}

func (p *Pending) appendCopy(frame []byte) {
	if p.chunk == nil || len(*p.chunk)+len(frame) > cap(*p.chunk) {
		p.newChunk(len(frame))
	}
	iov, _ := p.iovTail()
	c := *p.chunk
	start := len(c)
	c = append(c, frame...)
	*p.chunk = c
	if p.open >= 0 && len(*iov) > 0 {
		(*iov)[len(*iov)-1] = c[p.open:len(c):len(c)]
		return
	}
	p.open = start
	*iov = append(*iov, c[start:len(c):len(c)])
}

// newChunk starts a chunk with room for at least n bytes. The previous chunk
// stays alive in p.chunks until the iovecs pointing into it are written.
func (p *Pending) newChunk(n int) {
	var c *[]byte
	if n <= chunkSize {
		c = chunkPool.Get().(*[]byte)
	} else {
		b := make([]byte, 0, n)
		c = &b
	}
	*c = (*c)[:0]
	p.chunks = append(p.chunks, c)
	p.chunk = c
	p.open = -1
}

// join moves the blocks' frames to IOV and refs, in order, for a writer.
func (p *Pending) join() {
	if len(p.blocks) == 0 {
		return
	}
	n := 0
	for _, b := range p.blocks {
		n += len(b.iov)
	}
	p.IOV = slices.Grow(p.IOV, n)
	p.refs = slices.Grow(p.refs, n)
	for i, b := range p.blocks {
		p.IOV = append(p.IOV, b.iov...)
		p.refs = append(p.refs, b.refs...)
		b.clear()
		blockPool.Put(b)
		p.blocks[i] = nil
	}
	p.blocks = p.blocks[:0]
	p.open = -1
}

func (b *frameBlock) clear() {
	clear(b.iov)
	clear(b.refs)
	b.iov, b.refs = b.iov[:0], b.refs[:0]
}

func (p *Pending) release() {
	for i, b := range p.refs {
		b.Release()
		p.refs[i] = nil
	}
	p.refs = p.refs[:0]
	for i, blk := range p.blocks {
		for _, b := range blk.refs {
			b.Release()
		}
		blk.clear()
		blockPool.Put(blk)
		p.blocks[i] = nil
	}
	p.blocks = p.blocks[:0]
	for i, c := range p.chunks {
		if cap(*c) == chunkSize {
			chunkPool.Put(c)
		}
		p.chunks[i] = nil
	}
	p.chunks = p.chunks[:0]
	p.chunk = nil
	clear(p.IOV)
	if cap(p.IOV) > maxKeptFrames || cap(p.refs) > maxKeptFrames {
		p.IOV, p.refs = nil, nil
	}
	p.reset()
}

// releaseSoon releases p, on a goroutine of its own when it holds many
// blocks: the frames a parked subscriber gathered before it was cut take
// milliseconds to let go of, and the shard that cuts it is in the middle
// of a pass that healthy clients wait for.
func (p *Pending) releaseSoon() {
	if len(p.blocks) < releaseAsideBlocks {
		p.release()
		return
	}
	aside := *p
	*p = Pending{open: -1}
	go aside.release()
}

// releaseAsideBlocks is how many blocks make releaseSoon use a goroutine.
const releaseAsideBlocks = 16
