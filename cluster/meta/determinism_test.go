package meta

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// drawCommand draws an entry for state s: mostly commands that may well
// succeed (names and ids from small pools, groups and nodes s has), some
// that fail, and some that are not commands at all.
func drawCommand(t *rapid.T, s *State) []byte {
	node := rapid.Uint64Range(0, 9)
	topic := rapid.SampledFrom([]string{"a", "b", "c", "acme~d", "bad/name"})
	config := rapid.MapOfN(rapid.SampledFrom([]string{"retention", "fsync", "x", ""}), rapid.SampledFrom([]string{"", "1", "2"}), 0, 3)
	switch rapid.IntRange(0, 14).Draw(t, "op") {
	case 0, 1, 2:
		id := node.Draw(t, "id")
		host := rapid.IntRange(0, 9).Draw(t, "host")
		return AddNode{ID: id, ClientAddr: fmt.Sprintf("h%d:1", host), ClusterAddr: fmt.Sprintf("h%d:2", host),
			HTTPAddr: rapid.SampledFrom([]string{"", "h:80", "bad"}).Draw(t, "http")}.Encode()
	case 3, 4:
		return CreateTopic{Name: topic.Draw(t, "topic"), Partitions: rapid.IntRange(-1, 12).Draw(t, "partitions"),
			Replicas: rapid.SampledFrom([]int{0, 1, 1, 3, 3, 5, 2, 7}).Draw(t, "replicas"), Config: config.Draw(t, "config")}.Encode()
	case 5:
		return DeleteTopic{Name: topic.Draw(t, "topic")}.Encode()
	case 6:
		return AlterTopic{Name: topic.Draw(t, "topic"), Config: config.Draw(t, "config")}.Encode()
	case 7:
		return RemoveNode{ID: node.Draw(t, "id")}.Encode()
	case 8:
		return DrainNode{ID: node.Draw(t, "id")}.Encode()
	case 9:
		return ReportLeader{Group: rapid.Uint64Range(FirstPartitionGroup-1, max(s.nextGroup, FirstPartitionGroup)).Draw(t, "group"),
			Leader: node.Draw(t, "leader"), Term: rapid.Uint64Range(0, 5).Draw(t, "term")}.Encode()
	case 10:
		return drawMove(t, s, topic.Draw(t, "topic"))
	case 11:
		return Rebalance{}.Encode()
	case 13:
		return SetReader{Topic: topic.Draw(t, "topic"), Partition: rapid.IntRange(-1, 3).Draw(t, "partition"),
			Node: node.Draw(t, "reader"), On: rapid.Bool().Draw(t, "on")}.Encode()
	case 12:
		return SetSecurity{Key: rapid.SampledFrom([]string{"", "user/a", "acl/1"}).Draw(t, "key"),
			Value: rapid.SliceOfN(rapid.Byte(), 0, 3).Draw(t, "value")}.Encode()
	default:
		return []byte(rapid.SampledFrom([]string{`{`, `{"v":2,"op":"rebalance"}`, `{"v":1,"op":"nope"}`, `null`,
			`{"v":1,"op":"create_topic","name":"a","partitions":"1"}`}).Draw(t, "garbage"))
	}
}

// drawMove draws a MoveReplicas for the topic: usually of the right
// length, over the active nodes, and sometimes over every node s knows
// and one it does not.
func drawMove(t *rapid.T, s *State, topic string) []byte {
	ids := s.ActiveNodes()
	if rapid.IntRange(0, 3).Draw(t, "anyNodes") == 0 {
		ids = ids[:0]
		for _, n := range s.Nodes() {
			ids = append(ids, n.ID)
		}
		ids = append(ids, 9)
	}
	set := rapid.Permutation(ids).Draw(t, "set")
	n := rapid.IntRange(0, len(set)).Draw(t, "n")
	tp := s.topics[topic]
	if tp != nil && tp.Replicas <= len(set) && n%4 != 0 {
		n = tp.Replicas
	}
	p := rapid.IntRange(-1, 12).Draw(t, "partition")
	if tp != nil && p%3 != 0 {
		p = rapid.IntRange(0, len(tp.Parts)-1).Draw(t, "partition")
	}
	return MoveReplicas{Topic: topic, Partition: p, Replicas: set[:n]}.Encode()
}

// TestDeterminism feeds two states the same random entries: their results
// and states stay equal, though one is now and then replaced by its
// Clone or by its snapshot read back (Go iterates maps in a new order
// each time, so any decision taken in map order shows here). Every state
// is valid, and a failed entry changes nothing but Version.
func TestDeterminism(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := New(), New()
		index := uint64(0)
		for range rapid.IntRange(1, 120).Draw(t, "steps") {
			data := drawCommand(t, a)
			index += rapid.Uint64Range(1, 2).Draw(t, "gap")
			before := a.Clone()
			ra, ea := a.Apply(index, data)
			rb, eb := b.Apply(index, data)
			require.Equal(t, fmt.Sprint(ea), fmt.Sprint(eb), "%s", data)
			require.Equal(t, ra, rb, "%s", data)
			require.NoError(t, a.check(), "%s", data)
			require.Equal(t, index, a.Version())
			if ea != nil {
				before.version = index
				require.Equal(t, before, a, "a failed %s changed the state", data)
			}
			switch rapid.IntRange(0, 5).Draw(t, "restart") {
			case 0:
				b = b.Clone()
			case 1:
				snap, err := b.MarshalSnapshot()
				require.NoError(t, err)
				b, err = UnmarshalSnapshot(snap)
				require.NoError(t, err)
			}
		}
		requireSameState(t, a, b)
	})
}
