package main

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
)

// freeAddrs returns n addresses on 127.0.0.1 that were free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		_ = ln.Close() // free for the node that takes it
	}
	return addrs
}

// TestCLIClusterMembers: `cluster add-node` adds a node started with the
// members' addresses as --peers, which then shows in `cluster status`;
// `cluster rebalance` is accepted; `cluster remove-node` removes it for
// good: its id is refused afterwards.
func TestCLIClusterMembers(t *testing.T) {
	addrs := freeAddrs(t, 4)
	var peers []string
	for i, p := range addrs[:3] {
		peers = append(peers, strconv.Itoa(i+1)+"="+p)
	}
	data := t.TempDir()
	first := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--node-id", "1", "--cluster-addr", addrs[0], "--peers", strings.Join(peers, ","))
	for i := 2; i <= 3; i++ {
		startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "",
			"--node-id", strconv.Itoa(i), "--cluster-addr", addrs[i-1], "--peers", strings.Join(peers, ","))
	}
	startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "",
		"--node-id", "4", "--cluster-addr", addrs[3], "--peers", strings.Join(peers, ","))
	admin := []string{"--http-addr", first.httpAddr, "--data", data}
	status := func() httpapi.Cluster {
		out, errOut, code := runCLI(t, nil, append([]string{"cluster", "status", "--json"}, admin...)...)
		require.Zero(t, code, errOut)
		var st httpapi.Cluster
		require.NoError(t, json.Unmarshal([]byte(out), &st), out)
		return st
	}
	nodeStatus := func(id uint64) string {
		for _, n := range status().Nodes {
			if n.ID == id {
				return n.Status
			}
		}
		return ""
	}

	require.Eventually(t, func() bool {
		_, _, code := runCLI(t, nil, append([]string{"cluster", "add-node", "4", "--cluster-addr", addrs[3]}, admin...)...)
		return code == 0
	}, 60*time.Second, 100*time.Millisecond, "add-node never accepted")
	require.Eventually(t, func() bool { return nodeStatus(4) == "active" }, 60*time.Second, 50*time.Millisecond,
		"node 4 joined and registered")
	require.Eventually(t, func() bool { return slices.Contains(status().Controller.Voters, 4) },
		60*time.Second, 50*time.Millisecond, "node 4 is a voter of the controller")
	out, errOut, code := runCLI(t, nil, append([]string{"cluster", "status"}, admin...)...)
	require.Zero(t, code, errOut)
	require.Regexp(t, `(?m)^4\s+active\s+true`, out)

	_, errOut, code = runCLI(t, nil, append([]string{"cluster", "rebalance"}, admin...)...)
	require.Zero(t, code, errOut)

	out, errOut, code = runCLI(t, nil, append([]string{"cluster", "remove-node", "4", "--wait", "2m"}, admin...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "node 4 removed")
	require.Contains(t, out, "node 4 holds nothing any more")
	require.Equal(t, "removed", nodeStatus(4))
	require.NotContains(t, status().Controller.Voters, uint64(4), "--wait returned before node 4 left the controller")
	_, errOut, code = runCLI(t, nil, append([]string{"cluster", "add-node", "4", "--cluster-addr", addrs[3]}, admin...)...)
	require.NotZero(t, code)
	require.Contains(t, errOut, "removed")
	require.Contains(t, errOut, "never reused")
}
