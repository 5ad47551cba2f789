package driver

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// capReplica keeps each proposed batch (a copy, as cluster.Host.Propose
// takes) and its done callback, for the test to decide as a Raft group
// would.
type capReplica struct {
	mu      sync.Mutex
	batches [][]byte
	dones   []func(int64, error)
}

func (r *capReplica) Propose(batch []byte, done func(int64, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, append([]byte(nil), batch...))
	r.dones = append(r.dones, done)
}

func (r *capReplica) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dones)
}

// TestReviewReplicatedShardKeepsRaftEntriesReadable: the partition log
// of a replicated partition is also its Raft log, whose visible end
// raftlog.Storage.Commit moves to the committed end; Storage.Entries reads
// committed batch entries back through Log.Read, which serves only
// visible batches. The shard's makeVisible also calls Log.SetVisible, with
// the end of the proposal it is answering; a shard that answers a
// proposal after its group committed later ones (the host resolves the
// proposals of a pass and then commits; the shard runs on its own
// goroutine, behind) moves the visible end back. Entries then serves
// nothing for committed entries past that point, returns ErrUnavailable,
// and etcd raft panics on it (log.go: "entries[%d:%d) is unavailable
// from storage") — the node crashes as soon as its leader reads those
// entries for a follower that lags behind (probing, or pipelining beyond
// MaxInflightMsgs). Readers also see the end go backwards.
func TestReviewReplicatedShardKeepsRaftEntriesReadable(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	ml := storage.NewMemLog(64 << 20)
	store, err := raftlog.Open(ml, &raftlog.MemMeta{})
	require.NoError(t, err)
	p := shard.NewPartition("t", 0, s.Shard(), ml, shard.SyncPolicy{Mode: shard.SyncNever})
	t.Cleanup(func() {
		s.Stop()
		_ = ml.Close()
	})
	rep := &capReplica{}
	p.Replica = rep
	var k kicks
	out := outbox.NewOutbox(1<<20, 1, &k)
	for i := range 3 {
		b, off := deliverBuf(t, "t", 2)
		require.NoError(t, p.Publish(out, uint32(i+1), b, off))
		s.Wake()
	}
	require.Eventually(t, func() bool { return rep.count() == 3 }, 30*time.Second, time.Millisecond)
	t.Cleanup(func() {
		if t.Failed() { // answer the rest, so that their buffers go back before the shard stops
			for _, done := range rep.dones[1:] {
				done(0, errors.New("test failed"))
			}
		}
	})

	// The group appends the leader's empty entry and the three batches,
	// and commits them all (what cluster.Host does over one or two passes).
	ents := []raftpb.Entry{{Term: 1, Index: 1}}
	for i, b := range rep.batches {
		ents = append(ents, raftpb.Entry{Term: 1, Index: uint64(i + 2), Data: b})
	}
	require.NoError(t, store.Append(ents))
	end := store.Commit(4)
	require.Equal(t, int64(6), end)
	_, err = store.Entries(3, 5, 1<<20)
	require.NoError(t, err, "committed entries are readable right after Commit")

	// The shard now gets to the first proposal's outcome.
	rep.mu.Lock()
	done := rep.dones[0]
	rep.mu.Unlock()
	done(0, nil)
	acks := answers(t, out, 1)
	require.Equal(t, wire.TypePublishAck, acks[0].Type)

	_, vis := ml.Bounds()
	require.Equal(t, end, vis, "the shard moved the Raft log's visible end back below the commit")
	_, err = store.Entries(3, 5, 1<<20)
	require.NoError(t, err, "raft panics on ErrUnavailable from Storage.Entries")

	// The other two are answered too (their buffers go back).
	rep.mu.Lock()
	rest := rep.dones[1:]
	rep.mu.Unlock()
	rest[0](2, nil)
	rest[1](4, nil)
	answers(t, out, 2)
}

// failingReplica answers every proposal at once, on the caller's
// goroutine, as engine's replica.Propose does when the node no longer
// leads (r.Leads() fails between the server's check and the shard's
// pass), and as cluster.Host.Propose does once the host stopped
// (ErrStopped) or for a bad batch: Replicator's contract allows done "on
// any goroutine".
type failingReplica struct{}

func (failingReplica) Propose(_ []byte, done func(int64, error)) {
	done(0, wire.NotLeader(2, "127.0.0.1:7072", "test"))
}

// TestReviewReplicaAnsweringAtOnceDoesNotWedgeShard: the shard's done
// callback (replicate) Pushes the outcome into the shard's own inbox.
// Called synchronously, that Push runs on the goroutine holding the run
// token, in the middle of a pass; when the inbox is full (producers keep
// it full under load: the pass popped up to PassSize operations and the
// event loops refill the room at once), Push can neither take the token
// nor wait for room: it spins forever, and the shard, every partition on
// it and every event loop pushing to it hang. Here the inbox is small so
// that one pass's own answers fill it.
func TestReviewReplicaAnsweringAtOnceDoesNotWedgeShard(t *testing.T) {
	s := New(Config{Shard: shard.Config{Shards: 1}, InboxSize: 4})
	s.Start()
	p := shard.NewPartition("t", 0, s.Shard(), storage.NewMemLog(64<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	p.Replica = failingReplica{}
	var k kicks
	out := outbox.NewOutbox(1<<20, 1, &k)
	// Event loops publish concurrently: while the pass answers what it
	// popped, the others fill the room it made.
	const loops, each = 4, 200
	const n = loops * each
	var wg sync.WaitGroup
	for l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b, off := deliverBuf(t, "t", 1)
				if p.Publish(out, uint32(l*each+i+1), b, off) != nil {
					return
				}
				s.Wake()
			}
		}()
	}
	var got int
	deadline := time.Now().Add(10 * time.Second)
	for got < n && time.Now().Before(deadline) {
		if out.Queued() > 0 {
			got += len(frames(t, out))
		}
		time.Sleep(time.Millisecond)
	}
	if got < n {
		// The shard is wedged: Stop would wait for it forever.
		buf := make([]byte, 1<<20)
		t.Logf("%s", buf[:runtime.Stack(buf, true)])
		t.Fatalf("the shard answered %d of %d publishes, then hung (a synchronous done pushed into its own full inbox)", got, n)
	}
	wg.Wait()
	s.Stop()
}
