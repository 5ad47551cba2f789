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
	out     map[int]bool            // retired nodes (a lost disk): not expected to answer or be reached
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
// partition; "" when it is.
func (v view) healthy(nodes, partitions int, topic string) string {
	if len(v.reports) < nodes {
		return fmt.Sprintf("%d of %d nodes answer", len(v.reports), nodes)
	}
	var ctrl uint64
	for id, r := range v.reports {
		known := 0
		for _, n := range r.Nodes {
			if v.out[int(n.ID)] {
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
