package main

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startClusterServers starts three `ratatoskr serve` processes as one
// cluster and returns them once it takes topics.
func startClusterServers(t *testing.T) []*server {
	t.Helper()
	var ports []string
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().String())
	}
	for _, ln := range lns {
		_ = ln.Close() // free for the node that takes it
	}
	var peers []string
	for i, p := range ports {
		peers = append(peers, strconv.Itoa(i+1)+"="+p)
	}
	var nodes []*server
	for i, p := range ports {
		nodes = append(nodes, startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "",
			"--node-id", strconv.Itoa(i+1), "--cluster-addr", p, "--peers", strings.Join(peers, ",")))
	}
	return nodes
}

// TestCLIOnACluster: pub, sub and loadtest given a cluster's nodes (comma-
// separated, or --server repeated) send each partition to its leader, and
// carry on through a node that is down.
func TestCLIOnACluster(t *testing.T) {
	nodes := startClusterServers(t)
	all := nodes[0].addr + "," + nodes[1].addr + "," + nodes[2].addr
	require.Eventually(t, func() bool {
		_, errOut, code := runCLI(t, nil, "topic", "create", "orders", "--partitions", "3", "--replicas", "3", "--server", nodes[0].addr)
		return code == 0 || strings.Contains(errOut, "exists")
	}, 60*time.Second, 100*time.Millisecond, "the cluster never took a topic")

	_, errOut, code := runCLI(t, nil, "pub", "orders", "k1", "k2", "k3", "--key", "user-1", "--server", all)
	require.Zero(t, code, errOut)
	require.Regexp(t, `published 3 messages to orders: partition \d, offsets 0-2`, errOut)
	_, errOut, code = runCLI(t, strings.NewReader("u1\nu2\nu3\nu4\nu5\nu6\n"), "pub", "orders",
		"--server", nodes[2].addr, "--server", nodes[1].addr, "--server", nodes[0].addr)
	require.Zero(t, code, errOut)
	require.Contains(t, errOut, "published 6 messages to orders")

	out, errOut, code := runCLIFor(t, 60*time.Second, "sub", "orders", "--from", "earliest", "-n", "9", "--print-offsets", "--server", all)
	require.Zero(t, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 9)
	var keyed, unkeyed []string
	perPart := map[string]int{}
	keyPart := ""
	for _, l := range lines {
		f := strings.Fields(l)
		require.Len(t, f, 3, l)
		perPart[f[0]]++
		if strings.HasPrefix(f[2], "k") {
			keyed = append(keyed, f[1]+" "+f[2])
			keyPart = f[0]
		} else {
			unkeyed = append(unkeyed, f[2])
		}
	}
	require.Equal(t, []string{"0 k1", "1 k2", "2 k3"}, keyed, "a key's messages in order, in one partition")
	require.ElementsMatch(t, []string{"u1", "u2", "u3", "u4", "u5", "u6"}, unkeyed)

	out, errOut, code = runCLIFor(t, 120*time.Second, "loadtest", "--server", all, "--topic", "lt",
		"--partitions", "3", "--producers", "3", "--count", "3000", "--idempotence", "--json")
	require.Zero(t, code, errOut)
	require.Regexp(t, regexp.MustCompile(`"lost":0,"duplicated":0,"reordered":0`), out)

	// A node down: the others take its partitions over, and the CLI,
	// given all three, goes on.
	require.NoError(t, nodes[0].stop(t))
	_, errOut, code = runCLIFor(t, 60*time.Second, "pub", "orders", "after", "--key", "user-1", "--server", all)
	require.Zero(t, code, errOut)
	// The key's partition holds k1-k3 and whichever unkeyed messages the
	// client put there.
	require.Contains(t, errOut, fmt.Sprintf("published 1 message to orders: partition %s, offset %d", keyPart, perPart[keyPart]))
}
