package meta

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzState is what FuzzApply applies to: five nodes, one draining, two
// topics, a leader hint and a security key.
func fuzzState(t require.TestingT) *applier {
	a := cluster(t, 1, 2, 3, 4, 5)
	a.ok(CreateTopic{Name: "orders", Partitions: 4, Replicas: 3, Config: map[string]string{"retention": "2h"}})
	a.ok(CreateTopic{Name: "acme~logs", Partitions: 2, Replicas: 1})
	a.ok(ReportLeader{Group: 1001, Leader: 2, Term: 4})
	a.ok(DrainNode{ID: 5})
	a.ok(SetSecurity{Key: "user/alice", Value: []byte("pw")})
	return a
}

// FuzzApply applies arbitrary entries, one per line of the input, to a
// small cluster: Apply never panics, the state stays valid (every
// partition's replicas are distinct nodes, active or draining, and so
// on: State.check), an entry that fails changes nothing but Version, and
// the state survives a snapshot round trip. Inputs stop at 16 entries, or
// once the state holds more than 2048 partitions: checking a state is
// linear in its size.
func FuzzApply(f *testing.F) {
	seeds := [][]byte{
		CreateTopic{Name: "t", Partitions: 3, Replicas: 3, Config: map[string]string{"a": "b"}}.Encode(),
		DeleteTopic{Name: "orders"}.Encode(),
		AlterTopic{Name: "orders", Config: map[string]string{"retention": "", "x": "y"}}.Encode(),
		AddNode{ID: 6, ClientAddr: "h:1", ClusterAddr: "h:2"}.Encode(),
		RemoveNode{ID: 2}.Encode(),
		DrainNode{ID: 1}.Encode(),
		ReportLeader{Group: 1002, Leader: 3, Term: 9}.Encode(),
		MoveReplicas{Topic: "orders", Partition: 1, Replicas: []uint64{4, 3, 1}}.Encode(),
		Rebalance{}.Encode(),
		SetSecurity{Key: "k", Value: []byte{0}}.Encode(),
		[]byte(`{"v":1,"op":"create_topic","name":"t","partitions":1000,"replicas":1}`),
		[]byte(`{"v":1,"op":"move_replicas","topic":"orders","partition":0,"replicas":[5,5,5]}`),
		[]byte(`{"v":2}`), []byte(`{`), []byte(`null`), {},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(bytes.Join(seeds, []byte("\n")))
	f.Add(bytes.Join([][]byte{RemoveNode{ID: 1}.Encode(), RemoveNode{ID: 2}.Encode(), Rebalance{}.Encode(),
		AddNode{ID: 1, ClientAddr: "h:1", ClusterAddr: "h:2"}.Encode()}, []byte("\n")))
	base := fuzzState(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		a := &applier{t: t, s: base.s.Clone(), index: base.index}
		for i, entry := range bytes.Split(input, []byte("\n")) {
			if i == 16 {
				break
			}
			before := a.s.Clone()
			res, err := a.apply(entry) // checks the state
			if err != nil {
				require.Equal(t, Result{Index: a.index, Op: res.Op}, res)
				before.version = a.index
				require.Equal(t, before, a.s, "a failed %q changed the state", entry)
				require.False(t, errors.Is(err, ErrStaleIndex))
			}
			if len(a.s.groups) > 2048 {
				break // big states only slow the fuzzer down: TestCreateTopicMax has them
			}
		}
		snap, err := a.s.MarshalSnapshot()
		require.NoError(t, err)
		back, err := UnmarshalSnapshot(snap)
		require.NoError(t, err)
		require.Equal(t, a.s, back)
	})
}
