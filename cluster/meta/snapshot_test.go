package meta

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goldenSnapshot is snapshotState's snapshot: the format, pinned.
const goldenSnapshot = `{"v":1,"version":6,"next_group":1002,` +
	`"nodes":[{"id":1,"client_addr":"n1:7400","cluster_addr":"n1:7401","http_addr":"n1:8080","status":"active"},` +
	`{"id":2,"client_addr":"n2:7400","cluster_addr":"n2:7401","http_addr":"n2:8080","status":"draining"}],` +
	`"topics":[{"name":"t","replicas":1,"config":{"retention":"2h"},"created":3,"partitions":[` +
	`{"group":1000,"replicas":[2]},{"group":1001,"replicas":[1],"leader":2,"leader_term":3}]}],` +
	`"security":{"user/alice":"cHc="}}`

func snapshotState(t *testing.T) *State {
	a := cluster(t, 2, 1)
	a.ok(CreateTopic{Name: "t", Partitions: 2, Replicas: 1, Config: map[string]string{"retention": "2h"}})
	a.ok(ReportLeader{Group: 1001, Leader: 2, Term: 3})
	a.ok(DrainNode{ID: 2})
	a.ok(SetSecurity{Key: "user/alice", Value: []byte("pw")})
	return a.s
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := snapshotState(t)
	for range 5 { // map order differs each time; the bytes must not
		b, err := s.MarshalSnapshot()
		require.NoError(t, err)
		require.Equal(t, goldenSnapshot, string(b))
	}
	got, err := UnmarshalSnapshot([]byte(goldenSnapshot))
	require.NoError(t, err)
	requireSameState(t, s, got)
	topic, p, ok := got.GroupOf(1001)
	require.True(t, ok, "the group index is rebuilt")
	require.Equal(t, "t", topic)
	require.Equal(t, 1, p)

	// It applies on as the original does.
	for _, st := range []*State{s, got} {
		res, err := st.Apply(7, CreateTopic{Name: "u", Partitions: 1}.Encode())
		require.NoError(t, err)
		require.Equal(t, uint64(1002), res.Partitions[0].Group)
	}
	requireSameState(t, s, got)

	var zero State
	b, err := zero.MarshalSnapshot()
	require.NoError(t, err)
	got, err = UnmarshalSnapshot(b)
	require.NoError(t, err)
	requireSameState(t, New(), got)
}

// TestSnapshotRejects: a snapshot that does not hold a valid state is
// refused; each case breaks one rule of the golden snapshot.
func TestSnapshotRejects(t *testing.T) {
	cases := []struct{ name, old, new string }{
		{"not json", `{"v":1`, `{"v":1,`},
		{"future version", `{"v":1`, `{"v":2`},
		{"no version", `"v":1,`, ``},
		{"reserved next group", `"next_group":1002`, `"next_group":5`},
		{"group at next group", `"next_group":1002`, `"next_group":1001`},
		{"node twice", `{"id":2,`, `{"id":1,`},
		{"node 0", `{"id":1,`, `{"id":0,`},
		{"unknown status", `"draining"`, `"resting"`},
		{"topic twice", `"topics":[`, `"topics":[{"name":"t","replicas":1,"config":{},"created":3,"partitions":[{"group":1005,"replicas":[1]}]},`},
		{"invalid topic name", `"name":"t"`, `"name":"a/b"`},
		{"even replicas", `"replicas":1,`, `"replicas":2,`},
		{"no partitions", `"partitions":[{"group":1000,"replicas":[2]},{"group":1001,"replicas":[1],"leader":2,"leader_term":3}]`, `"partitions":[]`},
		{"created after the version", `"created":3`, `"created":7`},
		{"created at 0", `"created":3`, `"created":0`},
		{"empty config value", `"retention":"2h"`, `"retention":""`},
		{"group twice", `{"group":1001`, `{"group":1000`},
		{"reserved group", `{"group":1000`, `{"group":1`},
		{"replicas of the wrong length", `"replicas":[2]`, `"replicas":[2,1]`},
		{"no replicas", `"replicas":[2]`, `"replicas":[]`},
		{"unknown replica", `"replicas":[2]`, `"replicas":[3]`},
		{"removed replica", `"status":"draining"`, `"status":"removed"`},
		{"unknown leader", `"leader":2`, `"leader":3`},
		{"empty security value", `"cHc="`, `""`},
		{"null topic", `"topics":[`, `"topics":[null,`},
		{"security not base64", `"cHc="`, `"!"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := strings.Replace(goldenSnapshot, c.old, c.new, 1)
			require.NotEqual(t, goldenSnapshot, data, "the case changes nothing")
			_, err := UnmarshalSnapshot([]byte(data))
			require.ErrorIs(t, err, ErrBadSnapshot, "%s", data)
		})
	}
}
