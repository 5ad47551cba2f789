package client

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The group admin answers are wire's types, so the client reports every
// field exactly as the broker sends it and cannot drift from the protocol.

// GroupSummary is one entry of ListGroups: a group, its topic and how many
// members it has.
type GroupSummary = wire.GroupSummary

// GroupPartition is the state of one partition of a group: its owner
// (empty when unassigned), the committed offset (the next to consume; -1
// when nothing is committed), the partition's end, the lag (End -
// Committed; -1 when nothing is committed) and, in message mode, how many
// messages are delivered and not yet acked.
type GroupPartition = wire.GroupPartition

// GroupInfo describes a consumer group: wire's GroupInfo, whose fields it
// promotes, with the ack mode as the client's AckMode. Mode shadows the
// embedded wire.GroupInfo.Mode, which holds the same mode as encoded on the
// wire.
type GroupInfo struct {
	wire.GroupInfo
	Mode AckMode
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
	return list, nil
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
	return GroupInfo{GroupInfo: wi, Mode: ackModeOf(wi.Mode)}, nil
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

// ResetGroupPartitions moves the committed offsets of the given partitions
// only, each to its own position; the others keep theirs. The group must
// have no members (ErrGroupActive); a partition its topic does not have is
// ErrUnknownPartition. A broker older than per-partition resets refuses
// the request as malformed and closes the connection.
func (c *Client) ResetGroupPartitions(ctx context.Context, group string, to map[int]Position) error {
	if len(to) == 0 {
		return wire.Errorf(wire.CodeInvalidArgument, "no partitions to reset")
	}
	req := wire.ResetGroup{Group: group, Start: Earliest.wire()}
	for _, p := range slices.Sorted(maps.Keys(to)) {
		req.Partitions = append(req.Partitions, wire.PartitionTarget{Partition: int32(p), Start: to[p].wire()})
	}
	r, err := c.call(ctx, wire.TypeResetGroup, req.Flags(), req.Append(nil))
	if err != nil {
		return err
	}
	return expect(r, wire.TypeOK)
}
