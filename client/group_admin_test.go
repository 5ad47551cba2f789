package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
	"github.com/stretchr/testify/require"
)

// The group admin answers are wire's types, not copies that can drift.
var (
	_ wire.GroupSummary   = client.GroupSummary{}
	_ wire.GroupPartition = client.GroupPartition{}
	_ wire.GroupInfo      = client.GroupInfo{}.GroupInfo
)

// TestDescribeGroup: a message-mode group with one member reads back with
// the broker's fields as sent and the mode as the client's AckMode.
func TestDescribeGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialT(t, brokerAddr)
	require.NoError(t, c.CreateTopic(ctx, "described", client.TopicConfig{Partitions: 2}))
	handled := make(chan struct{}, 4)
	g, err := client.JoinGroup(ctx, brokerAddr, client.GroupConfig{
		Group: "describers", Topic: "described", Mode: client.AckMessage, Start: client.Earliest,
		Handler: func(*client.GroupMessage) error { handled <- struct{}{}; return nil },
	})
	require.NoError(t, err)
	defer func() { _ = g.Close() }()
	for _, v := range []string{"a", "b", "c"} {
		_, err := c.Publish(ctx, "described", client.Message{Key: []byte(v), Value: []byte(v)})
		require.NoError(t, err)
	}
	for range 3 {
		<-handled
	}

	var info client.GroupInfo
	require.Eventually(t, func() bool {
		info, err = c.DescribeGroup(ctx, "describers")
		if err != nil || len(info.Members) != 1 || len(info.Partitions) != 2 {
			return false
		}
		for _, p := range info.Partitions {
			if p.Owner != info.Members[0] || p.Pending != 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "one member owns both partitions, nothing pending: %+v", info)
	require.Equal(t, "describers", info.Group)
	require.Equal(t, "described", info.Topic)
	require.Equal(t, client.AckMessage, info.Mode)
	require.Equal(t, wire.AckMessage, info.GroupInfo.Mode)
	require.Positive(t, info.Generation)
	var ends int64
	for i, p := range info.Partitions {
		require.Equal(t, int32(i), p.Partition)
		ends += p.End
	}
	require.Equal(t, int64(3), ends)

	list, err := c.ListGroups(ctx)
	require.NoError(t, err)
	require.Contains(t, list, client.GroupSummary{Group: "describers", Topic: "described", Members: 1})

	_, err = c.DescribeGroup(ctx, "no-such-group")
	require.ErrorIs(t, err, client.ErrUnknownGroup)
}
