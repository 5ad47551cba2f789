package driver

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeReplica holds proposals until the test decides them, as a Raft
// group would commit them (with a base offset) or fail them.
type fakeReplica struct {
	mu    sync.Mutex
	props []func(int64, error)
	seqs  []int32
}

func (f *fakeReplica) Propose(batch []byte, done func(int64, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.props = append(f.props, done)
	f.seqs = append(f.seqs, wire.Batch(batch).ProducerSeq())
}

func (f *fakeReplica) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.props)
}

func (f *fakeReplica) decide(i int, base int64, err error) {
	f.mu.Lock()
	done := f.props[i]
	f.mu.Unlock()
	done(base, err)
}

// idemBuf is deliverBuf for an idempotent producer's batch.
func idemBuf(t *testing.T, id int64, seq int32, n int) (*storage.Buf, int) {
	t.Helper()
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, "t", 0)
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, id, seq)
	for i := range n {
		bb.Append(int64(i), nil, []byte("v"), nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	b := storage.NewBuf(len(frame))
	copy(b.B, frame)
	return b, off
}

func answers(t *testing.T, o *outbox.Outbox, n int) []wire.Frame {
	t.Helper()
	var got []wire.Frame
	require.Eventually(t, func() bool {
		if o.Queued() > 0 {
			got = append(got, frames(t, o)...)
		}
		return len(got) >= n
	}, 30*time.Second, time.Millisecond)
	require.Len(t, got, n)
	return got
}

// TestReplicatedIdempotentRetries: a replicated partition proposes instead
// of storing; pipelined batches of one producer are all proposed; a retry
// of a batch in flight waits and gets the original's offsets; a retry of a
// failed one is proposed again; a batch committed under another leader
// (Committed) is answered as a duplicate here.
func TestReplicatedIdempotentRetries(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	p := memPartition(t, "t", s)
	rep := &fakeReplica{}
	p.Replica = rep
	var k kicks
	out := outbox.NewOutbox(1<<20, 1, &k)
	publish := func(corr uint32, seq int32, n int) {
		b, off := idemBuf(t, 7, seq, n)
		require.NoError(t, p.Publish(out, corr, b, off))
		s.Wake()
	}
	publish(1, 0, 2) // seq 0-1
	publish(2, 2, 3) // seq 2-4, pipelined behind it
	require.Eventually(t, func() bool { return rep.count() == 2 }, 30*time.Second, time.Millisecond)
	publish(3, 0, 2) // a retry of the first, still in flight: not proposed
	s.Wake()
	rep.decide(0, 0, nil)
	acks := answers(t, out, 2)
	for _, f := range acks {
		require.Equal(t, wire.TypePublishAck, f.Type)
		a, err := wire.DecodePublishAck(f.Body)
		require.NoError(t, err)
		require.Equal(t, int64(0), a.BaseOffset, "corr %d: the original's offset", f.Corr)
	}
	require.Equal(t, 2, rep.count(), "the retry was not proposed")
	// The second fails (the leader stepped down): its retry is proposed again.
	rep.decide(1, 0, wire.NotLeader(2, "127.0.0.1:7072", "test"))
	errs := answers(t, out, 1)
	require.Equal(t, wire.TypeError, errs[0].Type)
	publish(4, 2, 3)
	require.Eventually(t, func() bool { return rep.count() == 3 }, 30*time.Second, time.Millisecond)
	rep.decide(2, 2, nil)
	a, err := wire.DecodePublishAck(answers(t, out, 1)[0].Body)
	require.NoError(t, err)
	require.Equal(t, int64(2), a.BaseOffset)
	// Another leader committed seq 5-5 at offset 9 (this node learns it
	// from its group): the producer's retry here is a duplicate.
	require.NoError(t, s.Push(shard.Committed(p, 10, []shard.ProducerBatch{{ID: 7, Seq: 5, Count: 1, Base: 9}})))
	s.Wake()
	publish(5, 5, 1)
	a, err = wire.DecodePublishAck(answers(t, out, 1)[0].Body)
	require.NoError(t, err)
	require.Equal(t, int64(9), a.BaseOffset)
	require.Equal(t, 3, rep.count(), "a committed batch's retry is not proposed")
	require.Equal(t, int64(10), p.EndOffset())
}
