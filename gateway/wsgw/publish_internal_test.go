package wsgw

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// publishCmd is a publish command of n records of size bytes each to
// topic t, partition 0.
func publishCmd(n, size int) *command {
	cmd := &command{}
	cmd.Topic, cmd.Partition = "t", 0
	for range n {
		cmd.Records = append(cmd.Records, client.Message{Value: bytes.Repeat([]byte{'x'}, size)})
	}
	return cmd
}

// A round joins the publishes of several commands into one PublishBatch.
// A command with a record the broker cannot take fails alone: the others
// of its round are still published and acknowledged.
func TestRoundOversizedRecordFailsOnlyItsCommand(t *testing.T) {
	p := &publisher{}
	good, bad := publishCmd(2, 10), publishCmd(2, 10)
	bad.Records[1].Value = bytes.Repeat([]byte{'x'}, 100)
	limit := wire.MessageSize(nil, good.Records[0].Value, nil) + 10
	groups := p.group([]*command{good, bad}, limit)
	require.Len(t, groups, 1)
	require.Len(t, groups[0].msgs, 2, "only the good command's records are published")
	require.NoError(t, good.err)
	require.Equal(t, gateway.KindTooLarge, gateway.KindOf(bad.err))
	require.Equal(t, []client.Ack{{Partition: -1, Offset: -1}, {Partition: -1, Offset: -1}}, bad.acks)
}

// When a round's PublishBatch fails in part, a command whose records
// were all stored is acknowledged; only a command with a record not
// stored gets the error (a client retries what failed, so a stored
// command reported as failed would be stored twice).
func TestRoundPartialFailureFailsOnlyUnstoredCommands(t *testing.T) {
	p := &publisher{}
	first, second := publishCmd(2, 1), publishCmd(2, 1)
	groups := p.group([]*command{first, second}, 1<<20)
	require.Len(t, groups, 1)
	g := groups[0]
	g.acks = []client.Ack{{Partition: 0, Offset: 7}, {Partition: 0, Offset: 8}, {Partition: -1, Offset: -1}, {Partition: -1, Offset: -1}}
	g.err = wire.Errorf(wire.CodeQuotaExceeded, "over quota")
	p.settle(groups)
	require.NoError(t, first.err)
	require.Equal(t, []client.Ack{{Partition: 0, Offset: 7}, {Partition: 0, Offset: 8}}, first.acks)
	require.Equal(t, gateway.KindExhausted, gateway.KindOf(second.err))
}
