package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
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
// still reach both), which is how partitions are made.
const (
	nsPrefix = "rtj-"
	hubNS    = nsPrefix + "hub"
	hostLink = nsPrefix + "c"
	subnet   = "10.77.0."
	hostIP   = subnet + "254"
)

// network is the namespaces of one run.
type network struct {
	nodes int
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

// setup creates the namespaces, the bridge and the links, after removing
// what a run that died left behind.
func (n *network) setup() error {
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
	for id := 1; id <= n.nodes; id++ {
		ns := nodeNS(id)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", hubPort(id), "netns", hubNS},
			[]string{"-n", hubNS, "link", "set", hubPort(id), "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", nodeIP(id) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// cleanup deletes the namespaces (their links go with them) and the host
// end of the runner's link; what does not exist is no error.
func (n *network) cleanup() {
	_ = ip("link", "del", hostLink)
	for id := 1; id <= max(n.nodes, 9); id++ {
		_ = ip("netns", "del", nodeNS(id))
	}
	_ = ip("netns", "del", hubNS)
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
	var errs []error
	for id := 1; id <= n.nodes; id++ {
		errs = append(errs, ip("-n", nodeNS(id), "route", "flush", "type", "blackhole"),
			n.isolate(id, false))
	}
	return errors.Join(errs...)
}
