package client

import (
	"context"
	"fmt"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// GroupSummary is one entry of ListGroups.
type GroupSummary struct {
	Group, Topic string
	Members      int
}

// GroupPartition is the state of one partition of a group.
type GroupPartition struct {
	Partition int
	Owner     string // member id; empty when unassigned
	Committed int64  // next offset to consume; -1 when nothing is committed
	End       int64  // the partition's end offset
	Lag       int64  // End - Committed; -1 when nothing is committed
	Pending   int    // message mode: delivered and not yet acked
}

// GroupInfo describes a consumer group.
type GroupInfo struct {
	Group, Topic string
	Generation   uint32
	Mode         AckMode
	Members      []string
	Partitions   []GroupPartition
}

// Lag is the group's total lag over the partitions with a committed
// offset.
func (g GroupInfo) Lag() int64 {
	var n int64
	for _, p := range g.Partitions {
		if p.Lag > 0 {
			n += p.Lag
		}
	}
	return n
}

// ListGroups lists the broker's consumer groups, sorted by name: those with
// members and those with committed offsets.
func (c *Client) ListGroups(ctx context.Context) ([]GroupSummary, error) {
	r, err := c.call(ctx, wire.TypeListGroups, 0, nil)
	if err == nil {
		err = expect(r, wire.TypeGroupList)
	}
	if err != nil {
		return nil, err
	}
	list, err := wire.DecodeGroupList(r.body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	out := make([]GroupSummary, len(list))
	for i, g := range list {
		out[i] = GroupSummary{Group: g.Group, Topic: g.Topic, Members: int(g.Members)}
	}
	return out, nil
}

// DescribeGroup returns a group's members, the owner, committed offset and
// lag of each partition; ErrUnknownGroup if there is no such group.
func (c *Client) DescribeGroup(ctx context.Context, group string) (GroupInfo, error) {
	r, err := c.call(ctx, wire.TypeDescribeGroup, 0, wire.AppendName(nil, group))
	if err == nil {
		err = expect(r, wire.TypeGroupInfo)
	}
	if err != nil {
		return GroupInfo{}, err
	}
	wi, err := wire.DecodeGroupInfo(r.body)
	if err != nil {
		return GroupInfo{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	info := GroupInfo{Group: wi.Group, Topic: wi.Topic, Generation: wi.Generation, Mode: ackModeOf(wi.Mode),
		Members: wi.Members, Partitions: make([]GroupPartition, len(wi.Partitions))}
	for i, p := range wi.Partitions {
		info.Partitions[i] = GroupPartition{Partition: int(p.Partition), Owner: p.Owner, Committed: p.Committed,
			End: p.End, Lag: p.Lag, Pending: int(p.Pending)}
	}
	return info, nil
}

// ResetGroup moves the committed offsets of every partition of a group to
// a position: Earliest, Latest, AtOffset (the same offset in every
// partition) or AtTime. The group must have no members (ErrGroupActive).
func (c *Client) ResetGroup(ctx context.Context, group string, to Position) error {
	req := wire.ResetGroup{Group: group, Start: to.wire()}
	r, err := c.call(ctx, wire.TypeResetGroup, 0, req.Append(nil))
	if err != nil {
		return err
	}
	return expect(r, wire.TypeOK)
}
