package storage

import (
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// StageQueue holds the batches a Staged log's writer has yet to write:
// the shard stages them (Stage), the writer takes them all at once (Take)
// and, once it wrote a prefix and released the rest (ReleaseStaged),
// hands the slice back (Done) to be reused. After a failed write, Stage
// fails with that write's error until Resume, and what was staged behind
// the failed write is dropped, so the caller can fail those publishes and
// give their offsets out again. Its lock is a leaf. The disk log and the
// Redis log share it.
type StageQueue struct {
	mu     sync.Mutex
	staged []StagedBatch
	spare  []StagedBatch
	broken error
}

// StagedBatch is a batch waiting for the writer, and the buffer that
// holds it (retained by Stage; nil for a caller's own bytes).
type StagedBatch struct {
	Buf   *Buf
	Batch wire.Batch
}

// Stage queues batch, retaining b, unless a failed write broke the queue.
func (q *StageQueue) Stage(b *Buf, batch wire.Batch) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.broken != nil {
		return q.broken
	}
	if b != nil {
		b.Retain()
	}
	q.staged = append(q.staged, StagedBatch{b, batch})
	return nil
}

// Take returns every batch staged, in order; the writer owns them until
// Done.
func (q *StageQueue) Take() []StagedBatch {
	q.mu.Lock()
	defer q.mu.Unlock()
	taken := q.staged
	q.staged = q.spare[:0]
	return taken
}

// Done hands back what Take returned, once every batch of it was written
// or released. With err (the write failed), Stage fails with err until
// Resume, and the batches staged since Take are released.
func (q *StageQueue) Done(taken []StagedBatch, err error) {
	clear(taken)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.spare = taken[:0]
	if err != nil {
		q.broken = err
		ReleaseStaged(q.staged)
		q.staged = q.staged[:0]
	}
}

// Resume lets Stage accept batches again after a failed write.
func (q *StageQueue) Resume() {
	q.mu.Lock()
	q.broken = nil
	q.mu.Unlock()
}

// Drop releases every batch staged (a close, a truncation).
func (q *StageQueue) Drop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	ReleaseStaged(q.staged)
	q.staged = q.staged[:0]
}

// ReleaseStaged releases the buffers of batches written or dropped, and
// forgets them.
func ReleaseStaged(st []StagedBatch) {
	for i := range st {
		if st[i].Buf != nil {
			st[i].Buf.Release()
		}
		st[i] = StagedBatch{}
	}
}
