package cluster

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// BenchmarkPropose measures proposals through three hosts in one process
// (memory logs, envelopes handed straight to the peer's Deliver): the
// host's loop, Raft and raftlog, without a transport or a disk. Groups
// are led by the three nodes in turn; proposals go round the groups with
// up to window of them in flight, so the hosts' passes carry many groups
// at once.
func BenchmarkPropose(b *testing.B) {
	for _, groups := range []int{1, 64} {
		for _, window := range []int{1, 256} {
			b.Run(fmt.Sprintf("groups=%d/window=%d", groups, window), func(b *testing.B) {
				benchPropose(b, groups, window)
			})
		}
	}
}

func benchPropose(b *testing.B, groups, window int) {
	ids := []uint64{1, 2, 3}
	hosts := map[uint64]*Host{}
	for _, id := range ids {
		var peers []uint64
		for _, o := range ids {
			if o != id {
				peers = append(peers, o)
			}
		}
		from := id
		hosts[id] = NewHost(HostConfig{NodeID: id, Peers: peers, TickInterval: 100 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler),
			Send:   func(to uint64, envs []Envelope) { hosts[to].Deliver(from, envs) }})
	}
	for _, id := range ids {
		hosts[id].Start()
		b.Cleanup(hosts[id].Stop)
		for g := 1; g <= groups; g++ {
			err := hosts[id].AddGroup(GroupConfig{ID: uint64(g), Voters: ids, Log: &testlog.Log{}, Meta: &testlog.Meta{}, Sync: true})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	for g := 1; g <= groups; g++ {
		if err := hosts[ids[g%len(ids)]].Campaign(uint64(g)); err != nil {
			b.Fatal(err)
		}
	}
	// Whoever won each election (on a loaded machine, not always the
	// node that campaigned).
	leaders := make([]*Host, groups+1)
	for g := 1; g <= groups; g++ {
		for leaders[g] == nil {
			for _, id := range ids {
				if st, err := hosts[id].Status(uint64(g)); err == nil && st.State == "StateLeader" {
					leaders[g] = hosts[id]
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	for range 4 {
		bb.Append(1, nil, make([]byte, 100), nil)
	}
	batch := bb.Finish()
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	var fails sync.Map
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		g := 1 + i%groups
		sem <- struct{}{}
		wg.Add(1)
		leaders[g].Propose(uint64(g), batch, func(r Result) {
			if r.Err != nil {
				fails.Store(g, r.Err)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	b.StopTimer()
	fails.Range(func(k, v any) bool {
		b.Fatalf("group %v: %v", k, v)
		return false
	})
}
