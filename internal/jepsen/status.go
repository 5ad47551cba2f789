package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
)

// status reads GET /api/v1/cluster of a node.
func status(ctx context.Context, n *node) (httpapi.Cluster, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.httpAddr()+"/api/v1/cluster", nil)
	if err != nil {
		return httpapi.Cluster{}, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return httpapi.Cluster{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return httpapi.Cluster{}, fmt.Errorf("node %d: GET /api/v1/cluster: %s", n.id, resp.Status)
	}
	var c httpapi.Cluster
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return httpapi.Cluster{}, fmt.Errorf("node %d: /api/v1/cluster: %w", n.id, err)
	}
	return c, nil
}

// view is every node's report at one moment.
type view struct {
	reports map[int]httpapi.Cluster // by node id
	out     map[int]bool            // retired nodes (a lost disk, replaced): not expected to answer or be reached
}

// local returns node id's state of partition p of topic.
func (v view) local(id int, topic string, p int) (*httpapi.RaftGroup, bool) {
	r, ok := v.reports[id]
	if !ok {
		return nil, false
	}
	for _, cp := range r.Partitions {
		if cp.Topic == topic && cp.Partition == p && cp.Local != nil {
			return cp.Local, true
		}
	}
	return nil, false
}

// leader returns the node that reports itself the leader of partition p,
// if exactly one does and every other node agrees.
func (v view) leader(topic string, p int) (int, error) {
	var leader uint64
	for id := range v.reports {
		g, ok := v.local(id, topic, p)
		if !ok {
			return 0, fmt.Errorf("node %d has no group for %s/%d", id, topic, p)
		}
		if g.Leader == 0 || leader != 0 && g.Leader != leader {
			return 0, fmt.Errorf("no agreed leader for %s/%d (node %d says %d)", topic, p, id, g.Leader)
		}
		leader = g.Leader
	}
	if g, ok := v.local(int(leader), topic, p); !ok || g.State != "StateLeader" {
		return 0, fmt.Errorf("node %d, named the leader of %s/%d, does not lead it", leader, topic, p)
	}
	return int(leader), nil
}

// claimedLeader returns the node that claims to lead partition p in the
// highest term, whether or not every node agrees (one may be down or
// crashing): the leader to read the partition from after the run.
func (v view) claimedLeader(topic string, p int) (int, *httpapi.RaftGroup, error) {
	best, bestID := (*httpapi.RaftGroup)(nil), 0
	for id := range v.reports {
		if g, ok := v.local(id, topic, p); ok && g.State == "StateLeader" && (best == nil || g.Term > best.Term) {
			best, bestID = g, id
		}
	}
	if best == nil {
		return 0, nil, fmt.Errorf("no node leads %s/%d", topic, p)
	}
	return bestID, best, nil
}

// healthy says why the cluster is not fully up: every node answers, sees
// the others, and agrees on a leader of the controller and of each
// partition; "" when it is. Nodes retired or removed from the cluster
// are neither expected to answer nor to be reached.
func (v view) healthy(nodes, partitions int, topic string) string {
	if len(v.reports) < nodes {
		return fmt.Sprintf("%d of %d nodes answer", len(v.reports), nodes)
	}
	var ctrl uint64
	for id, r := range v.reports {
		known := 0
		for _, n := range r.Nodes {
			if v.out[int(n.ID)] || n.Status == nodeRemoved {
				continue
			}
			known++
			if !n.Reachable {
				return fmt.Sprintf("node %d does not reach node %d", id, n.ID)
			}
		}
		if known < nodes {
			return fmt.Sprintf("node %d knows %d nodes", id, known)
		}
		if r.Controller.Leader == 0 || ctrl != 0 && r.Controller.Leader != ctrl {
			return fmt.Sprintf("no agreed controller leader (node %d says %d)", id, r.Controller.Leader)
		}
		ctrl = r.Controller.Leader
	}
	for p := range partitions {
		if _, err := v.leader(topic, p); err != nil {
			return err.Error()
		}
	}
	return ""
}

// nodeRemoved and nodeActive are node statuses of /api/v1/cluster
// (cluster/meta's NodeRemoved and NodeActive).
const (
	nodeRemoved = "removed"
	nodeActive  = "active"
)

// nodeStatus returns node id's status as every reporting node sees it, or
// why they do not all agree.
func (v view) nodeStatus(id int) (string, error) {
	var st string
	for rid, r := range v.reports {
		i := slices.IndexFunc(r.Nodes, func(n httpapi.ClusterNode) bool { return n.ID == uint64(id) })
		if i < 0 {
			return "", fmt.Errorf("node %d does not know node %d", rid, id)
		}
		if st != "" && r.Nodes[i].Status != st {
			return "", fmt.Errorf("node %d is %s to one node, %s to another", id, st, r.Nodes[i].Status)
		}
		st = r.Nodes[i].Status
	}
	if st == "" {
		return "", fmt.Errorf("no node answers")
	}
	return st, nil
}

// replaced says why node old is not yet replaced: the cluster must be
// healthy with nodes members, old removed, and every partition's
// replicas nodes members other than old, which are its group's voters
// (none still a learner, no change in flight); "" when it is.
func (v view) replaced(old, nodes, partitions int, topic string) string {
	if why := v.healthy(nodes, partitions, topic); why != "" {
		return why
	}
	if st, err := v.nodeStatus(old); err != nil || st != nodeRemoved {
		return fmt.Sprintf("node %d is not removed (%q, %v)", old, st, err)
	}
	for _, id := range slices.Sorted(maps.Keys(v.reports)) {
		r := v.reports[id]
		if in(r.Controller, old) {
			return fmt.Sprintf("node %d: the controller still includes node %d", id, old)
		}
		for p := range partitions {
			i := slices.IndexFunc(r.Partitions, func(cp httpapi.ClusterPart) bool { return cp.Topic == topic && cp.Partition == p })
			if i < 0 {
				return fmt.Sprintf("node %d does not know %s/%d", id, topic, p)
			}
			cp := r.Partitions[i]
			if len(cp.Replicas) != nodes || slices.Contains(cp.Replicas, uint64(old)) {
				return fmt.Sprintf("node %d: %s/%d has replicas %v", id, topic, p, cp.Replicas)
			}
			g := cp.Local
			if g == nil {
				return fmt.Sprintf("node %d holds no replica of %s/%d", id, topic, p)
			}
			if len(g.Learners) > 0 || len(g.Outgoing) > 0 ||
				!slices.Equal(slices.Sorted(slices.Values(g.Voters)), slices.Sorted(slices.Values(cp.Replicas))) {
				return fmt.Sprintf("node %d: %s/%d has voters %v, learners %v, outgoing %v (replicas %v)", id, topic, p,
					g.Voters, g.Learners, g.Outgoing, cp.Replicas)
			}
		}
	}
	return ""
}

// in reports whether group g includes node id: a voter, a learner or an
// outgoing voter.
func in(g httpapi.RaftGroup, id int) bool {
	n := uint64(id)
	return slices.Contains(g.Voters, n) || slices.Contains(g.Learners, n) || slices.Contains(g.Outgoing, n)
}

// converged says why the replicas differ: every replica of every
// partition must have committed all it holds, and hold the same; "" when
// they do.
func (v view) converged(nodes, partitions int, topic string) string {
	if why := v.healthy(nodes, partitions, topic); why != "" {
		return why
	}
	var diffs []string
	ids := slices.Sorted(maps.Keys(v.reports)) // the same answer on every call
	for p := range partitions {
		// The reference is the replica furthest on: the others are
		// named for lagging it, not it for leading them.
		var ref *httpapi.RaftGroup
		for _, id := range ids {
			if g, ok := v.local(id, topic, p); ok && (ref == nil || g.LastIndex > ref.LastIndex ||
				g.LastIndex == ref.LastIndex && g.Commit > ref.Commit) {
				ref = g
			}
		}
		for _, id := range ids {
			g, ok := v.local(id, topic, p)
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s/%d: node %d holds no replica", topic, p, id))
				continue
			}
			if g.Commit != g.LastIndex || g.Commit != ref.Commit || g.LastIndex != ref.LastIndex {
				diffs = append(diffs, fmt.Sprintf("%s/%d: node %d at commit %d of %d", topic, p, id, g.Commit, g.LastIndex))
			}
		}
	}
	return strings.Join(diffs, "; ")
}
