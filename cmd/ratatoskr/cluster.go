package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
)

// The cluster commands: a cluster's state and its leaders, through a
// node's HTTP API (docs/CLUSTER.md, docs/ADMIN.md).
type clusterCmd struct {
	Status         clusterStatusCmd         `cmd:"" help:"Nodes, the controller, and each replicated partition's replicas and leader, as this node sees them."`
	TransferLeader clusterTransferLeaderCmd `cmd:"" name:"transfer-leader" help:"Hand a partition's leadership to another of its replicas, which becomes its preferred leader."`
	Rebalance      clusterRebalanceCmd      `cmd:"" help:"Spread the replicas evenly over the active nodes (a node just added gets its share), then the preferred leaders; the groups follow."`
	AddNode        clusterAddNodeCmd        `cmd:"" name:"add-node" help:"Add a new node, started with its own --node-id and --cluster-addr and the members' addresses as --peers."`
	RemoveNode     clusterRemoveNodeCmd     `cmd:"" name:"remove-node" help:"Remove a node for good: its replicas move to other nodes, its leaderships are handed over; its id is never reused."`
}

type clusterAddNodeCmd struct {
	ID          uint64 `arg:"" help:"The new node's --node-id."`
	ClusterAddr string `name:"cluster-addr" required:"" help:"The new node's --cluster-addr (host:port), where the others reach it."`
	adminFlags
}

func (c *clusterAddNodeCmd) Run(ctx context.Context) error {
	body := map[string]any{"id": c.ID, "cluster_addr": c.ClusterAddr}
	if err := c.call(ctx, "POST", "/api/v1/cluster/add-node", body, nil); err != nil {
		return err
	}
	fmt.Printf("node %d joining: it serves once it has caught up; then `ratatoskr cluster rebalance` moves replicas to it\n", c.ID)
	return nil
}

type clusterRemoveNodeCmd struct {
	ID   uint64   `arg:"" help:"The node's id."`
	Wait duration `help:"Then wait, up to this long, until no Raft group includes the node any more (its replicas moved, it left the controller), as every node with an HTTP address reports; 0: return at once."`
	adminFlags
}

func (c *clusterRemoveNodeCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "POST", "/api/v1/cluster/remove-node", map[string]any{"id": c.ID}, nil); err != nil {
		return err
	}
	if c.Wait.D() <= 0 {
		fmt.Printf("node %d removed: its replicas are moving to other nodes (cluster status shows them); stop it once none is left\n", c.ID)
		return nil
	}
	fmt.Printf("node %d removed: waiting up to %s for its replicas to move\n", c.ID, c.Wait)
	ctx, cancel := context.WithTimeout(ctx, c.Wait.D())
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		why := c.holding(ctx)
		if why == "" {
			fmt.Printf("node %d holds nothing any more: stop it\n", c.ID)
			return nil
		}
		if why != last {
			fmt.Println("  " + why)
			last = why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %d still in some groups after %s: %s", c.ID, c.Wait, why)
		case <-tick.C:
		}
	}
}

// holding says what still includes the node being removed, as every other
// node with an HTTP address reports its own groups (a voter, a learner or
// an outgoing voter of the controller or of a partition's group); "" when
// nothing does.
func (c *clusterRemoveNodeCmd) holding(ctx context.Context) string {
	var st httpapi.Cluster
	if err := c.call(ctx, "GET", "/api/v1/cluster", nil, &st); err != nil {
		return err.Error()
	}
	in := func(g httpapi.RaftGroup) bool {
		return slices.Contains(g.Voters, c.ID) || slices.Contains(g.Learners, c.ID) || slices.Contains(g.Outgoing, c.ID)
	}
	var held []string
	for _, n := range st.Nodes {
		if n.ID == c.ID || n.Status == "removed" || n.HTTPAddr == "" {
			continue
		}
		at := c.adminFlags
		at.HTTPAddr = n.HTTPAddr
		var ns httpapi.Cluster
		if err := at.call(ctx, "GET", "/api/v1/cluster", nil, &ns); err != nil {
			held = append(held, fmt.Sprintf("node %d does not answer (%v)", n.ID, err))
			continue
		}
		if in(ns.Controller) {
			held = append(held, fmt.Sprintf("node %d: the controller", n.ID))
		}
		for _, p := range ns.Partitions {
			if p.Local != nil && in(*p.Local) {
				held = append(held, fmt.Sprintf("node %d: %s/%d", n.ID, p.Topic, p.Partition))
			}
		}
	}
	if len(held) == 0 {
		return ""
	}
	slices.Sort(held)
	return fmt.Sprintf("%d groups still include node %d (%s)", len(held), c.ID, strings.Join(held, ", "))
}

type clusterStatusCmd struct{ adminFlags }

func (c *clusterStatusCmd) Run(ctx context.Context) error {
	var st httpapi.Cluster
	if err := c.call(ctx, "GET", "/api/v1/cluster", nil, &st); err != nil || c.JSON {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(w, "node %d; controller leader %d, term %d\n\n", st.NodeID, st.Controller.Leader, st.Controller.Term)
	_, _ = fmt.Fprintln(w, "NODE\tSTATUS\tREACHABLE\tCLIENT ADDR\tCLUSTER ADDR\tHTTP ADDR\tLEADS")
	leads := map[uint64]int{}
	for _, p := range st.Partitions {
		leads[p.Leader]++
	}
	for _, n := range st.Nodes {
		_, _ = fmt.Fprintf(w, "%d\t%s\t%v\t%s\t%s\t%s\t%d\n", n.ID, n.Status, n.Reachable, n.ClientAddr, n.ClusterAddr,
			n.HTTPAddr, leads[n.ID])
	}
	if len(st.Partitions) > 0 {
		_, _ = fmt.Fprintln(w, "\nTOPIC\tPARTITION\tREPLICAS\tLEADER\tHERE")
		for _, p := range st.Partitions {
			here := "-"
			if l := p.Local; l != nil {
				here = fmt.Sprintf("%s term %d commit %d", strings.TrimPrefix(l.State, "State"), l.Term, l.Commit)
				if l.Quiesced {
					here += " (quiet)"
				}
				if l.Failed != "" {
					here += " FAILED: " + l.Failed
				}
			}
			leader := "none"
			if p.Leader != 0 {
				leader = fmt.Sprint(p.Leader)
			}
			replicas := fmt.Sprint(p.Replicas)
			if len(p.Readers) > 0 {
				replicas += fmt.Sprintf(" readers %v", p.Readers)
			}
			_, _ = fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", p.Topic, p.Partition, replicas, leader, here)
		}
	}
	return w.Flush()
}

type clusterTransferLeaderCmd struct {
	Topic     string `arg:"" help:"Topic."`
	Partition int    `arg:"" help:"Partition."`
	To        uint64 `required:"" help:"The node to lead it (one of its replicas)."`
	adminFlags
}

// Run asks the node given by --http-addr where the partition's leader is,
// and sends the request there.
func (c *clusterTransferLeaderCmd) Run(ctx context.Context) error {
	var st httpapi.Cluster
	if err := c.call(ctx, "GET", "/api/v1/cluster", nil, &st); err != nil {
		return err
	}
	var leader uint64
	found := false
	for _, p := range st.Partitions {
		if p.Topic == c.Topic && p.Partition == c.Partition {
			leader, found = p.Leader, true
		}
	}
	if !found {
		return fmt.Errorf("no replicated partition %d of topic %s", c.Partition, c.Topic)
	}
	at := c.adminFlags
	for _, n := range st.Nodes {
		if n.ID == leader && n.HTTPAddr != "" {
			at.HTTPAddr = n.HTTPAddr
		}
	}
	body := map[string]any{"topic": c.Topic, "partition": c.Partition, "to": c.To}
	if err := at.call(ctx, "POST", "/api/v1/cluster/transfer-leader", body, nil); err != nil {
		return err
	}
	fmt.Printf("partition %d of %s: leadership going to node %d\n", c.Partition, c.Topic, c.To)
	return nil
}

type clusterRebalanceCmd struct{ adminFlags }

func (c *clusterRebalanceCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "POST", "/api/v1/cluster/rebalance", map[string]any{}, nil); err != nil {
		return err
	}
	fmt.Println("rebalance started: replicas move to the nodes that hold fewest, and each partition's leader to its preferred node")
	return nil
}
