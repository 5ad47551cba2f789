package engine

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// TestClusterLostDiskIsRefused: node 3's data directory is wiped while it
// is down, and it comes back under its old id and address. Before, the
// leaders' heartbeats carried commit indexes its empty logs did not have,
// and etcd raft panicked (the whole process died); worse, its vote could
// have counted towards a quorum without the entries it had acknowledged.
// Now the others refuse it both ways, nothing reaches it, the cluster
// carries on with two nodes, and the documented replacement works: add a
// node under a new id, remove node 3; every acked message is on the new
// replica.
func TestClusterLostDiskIsRefused(t *testing.T) {
	const topic = "kept"
	nodes := startReplicatedTopic(t, topic, 1)
	cl := dialCluster(t, clusterAddrs(nodes, 0))
	var want []string
	publish := func(n int) {
		for range n {
			v := fmt.Sprint("m", len(want))
			_, err := cl.Publish(testCtx(t), topic, client.Message{Value: []byte(v)}, client.ToPartition(0))
			require.NoError(t, err)
			want = append(want, v)
		}
	}
	publish(20)
	for _, e := range nodes {
		waitValues(t, e, topic, 0, want)
	}

	survivors := nodes[:2]
	var refusedBefore []uint64
	for _, e := range survivors {
		refusedBefore = append(refusedBefore, e.cluster.tr.Stats().Refused)
	}
	wiped := restartNodeAfter(t, nodes[2], survivors, func() {
		require.NoError(t, os.RemoveAll(nodes[2].cfg.DataDir))
		require.NoError(t, os.MkdirAll(nodes[2].cfg.DataDir, 0o700))
	})
	for i, e := range survivors {
		require.Eventually(t, func() bool {
			return e.cluster.tr.Stats().Refused > refusedBefore[i] && e.cluster.tr.Unreachable(3)
		}, 60*time.Second, 10*time.Millisecond, "node %d refuses the wiped node 3 both ways", e.cfg.NodeID)
	}
	require.Zero(t, wiped.cluster.tr.Stats().FramesReceived, "a Raft message reached the wiped node")
	require.Zero(t, wiped.cluster.view.Load().Version(), "the wiped node learned metadata")
	require.Nil(t, wiped.topics.get([]byte(topic)))

	// Two nodes of three carry on.
	cl2 := dialCluster(t, clusterAddrs(survivors, 0))
	for range 10 {
		v := fmt.Sprint("m", len(want))
		_, err := cl2.Publish(testCtx(t), topic, client.Message{Value: []byte(v)}, client.ToPartition(0))
		require.NoError(t, err)
		want = append(want, v)
	}

	// The replacement: stop the wiped node, add node 4, remove node 3.
	shutdown(t, wiped)
	e4 := startJoiningNode(t, 4, survivors)
	// Given the two members as its peers, it counts itself too: a topic it
	// creates with the default replicas (the offsets topic) gets 3.
	require.GreaterOrEqual(t, e4.cluster.nodeCount(), 3)
	require.Equal(t, 3, meta.DefaultReplicas(e4.cluster.nodeCount()))
	a := newAdmin(t, survivors[0])
	a.json("POST", "/api/v1/cluster/add-node", fmt.Sprintf(`{"id":4,"cluster_addr":%q}`, e4.ClusterAddr().String()), 202, nil)
	require.Eventually(t, func() bool {
		n, ok := survivors[0].cluster.view.Load().Node(4)
		return ok && n.Status == meta.NodeActive
	}, 60*time.Second, 10*time.Millisecond, "node 4 active")
	a.json("POST", "/api/v1/cluster/remove-node", `{"id":3}`, 202, nil)
	rest := []*Engine{survivors[0], survivors[1], e4}
	require.Eventually(t, func() bool { return settled(rest, topic, 1) }, 120*time.Second, 10*time.Millisecond,
		"the replica of node 3 moved to node 4")
	pi, _ := survivors[0].cluster.view.Load().Partition(topic, 0)
	require.Equal(t, []uint64{1, 2, 4}, slices.Sorted(slices.Values(pi.Replicas)))
	waitValues(t, e4, topic, 0, want)

}

// TestIdentity: a data directory is bound to the node and cluster that
// made it; a data directory id that cannot be recorded (a full disk)
// refuses the peer rather than admit it unrecorded.
func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	fsys := vfs.Default()
	quiet := slog.New(slog.DiscardHandler)
	d1, err := loadIdentity(fsys, dir, 1, "c")
	require.NoError(t, err)
	d2, err := loadIdentity(fsys, dir, 1, "c")
	require.NoError(t, err)
	require.Equal(t, d1, d2, "the same directory keeps its id")
	_, err = loadIdentity(fsys, dir, 2, "c")
	require.ErrorContains(t, err, "belongs to node 1, not 2")
	_, err = loadIdentity(fsys, dir, 1, "other")
	require.ErrorContains(t, err, `belongs to cluster "c"`)
	require.NoError(t, os.WriteFile(dir+identityFile, []byte("{"), 0o600))
	_, err = loadIdentity(fsys, dir, 1, "c")
	require.Error(t, err, "a corrupt identity is not replaced by a new one")

	book, err := openDiskBook(fsys, dir, quiet)
	require.NoError(t, err)
	require.NoError(t, book.admit(2, d1))
	require.NoError(t, book.admit(2, d1))
	other := d1
	other[0]++
	require.ErrorContains(t, book.admit(2, other), "remove-node 2")
	require.Error(t, book.admit(3, [16]byte{}), "no id")
	// It survives a restart.
	book, err = openDiskBook(fsys, dir, quiet)
	require.NoError(t, err)
	require.ErrorContains(t, book.admit(2, other), "lost or replaced")

	efs := vfs.NewErrors(fsys)
	efs.InjectWrite(func(name string) bool { return strings.Contains(name, "known_disks") }, syscall.ENOSPC, 0)
	book, err = openDiskBook(efs, dir, quiet)
	require.NoError(t, err)
	require.ErrorContains(t, book.admit(5, other), "recording node 5")
	efs.Clear()
	require.NoError(t, book.admit(5, other), "admitted once recorded")
}
