package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// The network: a namespace per node and a hub namespace holding a bridge
// that joins them, so that no rule of the host's firewall applies to the
// nodes' traffic. The runner reaches every node over one more veth pair
// whose host end is in the runner's own namespace:
//
//	root ns          hub ns (rtj-hub)              node ns (rtj-nI)
//	rtj-c 10.77.0.254 ── c0 ┐
//	                        ├ br0 ── nI ───────── eth0 10.77.0.I
//	                        ┘
//
// Faults: a node's link goes down on the hub side (the node falls off the
// network: no peer and no client reaches it), or blackhole routes inside
// two node namespaces cut the link between those two nodes only (clients
// still reach both), which is how partitions are made. A node that
// replaces a wiped one gets the next id, and its own namespace and
// address like the first three; the wiped node's namespace goes, as its
// machine would.
const (
	nsPrefix = "rtj-"
	hubNS    = nsPrefix + "hub"
	hostLink = nsPrefix + "c"
	subnet   = "10.77.0."
	hostIP   = subnet + "254"
	// maxNodeID is the last node id with an address in the subnet.
	maxNodeID = 253
)

// network is the namespaces of one run. Only the nemesis's goroutine
// changes it (and cleanup, once the run is over).
type network struct {
	ids []int // the nodes' namespaces, in the order they were made
}

func nodeNS(id int) string  { return nsPrefix + "n" + strconv.Itoa(id) }
func nodeIP(id int) string  { return subnet + strconv.Itoa(id) }
func hubPort(id int) string { return "n" + strconv.Itoa(id) }

// command runs a command and returns its error with its output.
func command(name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ip runs the ip command.
func ip(args ...string) error { return command("ip", args...) }

// checkNetns fails unless this process may create network namespaces.
func checkNetns() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command (iproute2) is missing")
	}
	if err := ip("netns", "list"); err != nil {
		return fmt.Errorf("ip netns is unavailable: %w", err)
	}
	return nil
}

// setup creates the hub, the runner's link and the namespaces of nodes
// 1..nodes, after removing what a run that died left behind.
func (n *network) setup(nodes int) error {
	n.cleanup()
	steps := [][]string{
		{"netns", "add", hubNS},
		{"-n", hubNS, "link", "set", "lo", "up"},
		{"-n", hubNS, "link", "add", "br0", "type", "bridge"},
		{"-n", hubNS, "link", "set", "br0", "up"},
		{"link", "add", hostLink, "type", "veth", "peer", "name", "c0", "netns", hubNS},
		{"-n", hubNS, "link", "set", "c0", "master", "br0", "up"},
		{"addr", "add", hostIP + "/24", "dev", hostLink},
		{"link", "set", hostLink, "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	for id := 1; id <= nodes; id++ {
		if err := n.add(id); err != nil {
			return err
		}
	}
	return nil
}

// add creates node id's namespace, its link to the hub and its address.
func (n *network) add(id int) error {
	if id < 1 || id > maxNodeID {
		return fmt.Errorf("node id %d has no address in %s0/24", id, subnet)
	}
	if slices.Contains(n.ids, id) {
		return fmt.Errorf("node %d has a namespace already", id)
	}
	ns := nodeNS(id)
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", hubPort(id), "netns", hubNS},
		{"-n", hubNS, "link", "set", hubPort(id), "master", "br0", "up"},
		{"-n", ns, "addr", "add", nodeIP(id) + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	n.ids = append(n.ids, id) // before the steps: cleanup removes what they made of it
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes node id's namespace (its link goes with it): the node's
// machine is gone. Its process must have exited.
func (n *network) remove(id int) error {
	i := slices.Index(n.ids, id)
	if i < 0 {
		return fmt.Errorf("node %d has no namespace", id)
	}
	n.ids = slices.Delete(n.ids, i, i+1)
	return ip("netns", "del", nodeNS(id))
}

// cleanup deletes every namespace of the suite, this run's and any a run
// that died left behind (their links go with them), and the host end of
// the runner's link; what does not exist is no error.
func (n *network) cleanup() {
	_ = ip("link", "del", hostLink)
	for _, ns := range leftovers() {
		if ns != hubNS {
			_ = ip("netns", "del", ns)
		}
	}
	for _, id := range n.ids {
		_ = ip("netns", "del", nodeNS(id))
	}
	n.ids = nil
	_ = ip("netns", "del", hubNS)
}

// leftovers lists the namespaces named with the suite's prefix.
func leftovers() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	return suiteNamespaces(string(out))
}

// suiteNamespaces picks the suite's namespaces out of `ip netns list`,
// whose lines are a name, then maybe " (id: N)".
func suiteNamespaces(list string) []string {
	var out []string
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			out = append(out, f[0])
		}
	}
	return out
}

// isolate takes a node off the network (or puts it back).
func (n *network) isolate(id int, off bool) error {
	state := "up"
	if off {
		state = "down"
	}
	return ip("-n", hubNS, "link", "set", hubPort(id), state)
}

// cut drops every packet between nodes a and b, both ways.
func (n *network) cut(a, b int) error {
	if err := ip("-n", nodeNS(a), "route", "add", "blackhole", nodeIP(b)+"/32"); err != nil {
		return err
	}
	return ip("-n", nodeNS(b), "route", "add", "blackhole", nodeIP(a)+"/32")
}

// heal removes every partition and brings every link up.
func (n *network) heal() error {
	errs := make([]error, 0, 2*len(n.ids))
	for _, id := range n.ids {
		errs = append(errs, ip("-n", nodeNS(id), "route", "flush", "type", "blackhole"),
			n.isolate(id, false))
	}
	return errors.Join(errs...)
}
