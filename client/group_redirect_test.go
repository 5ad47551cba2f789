package client

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A cluster's group consumer goes where a refusal names the coordinator,
// and on to the next node it knows when none is named or the node does not
// answer; a single broker's never moves.
func TestGroupRedirect(t *testing.T) {
	g := &GroupConsumer{addr: "n1:7070", addrs: []string{"n1:7070", "n2:7070", "n3:7070"}}

	named := wire.NotLeader(3, "n3:7070", "coordinator of group \"g\": partition 1 of __consumer_offsets")
	require.True(t, g.redirect(named))
	require.Equal(t, "n3:7070", g.addr)

	// As the end of a membership: an Error with corr 0 ends the connection.
	moved := fmt.Errorf("%w: %w", ErrConnectionLost, wire.NotLeader(4, "n4:7070", "coordinator"))
	require.True(t, g.redirect(moved))
	require.Equal(t, "n4:7070", g.addr)
	require.Contains(t, g.addrs, "n4:7070", "a node learnt from a refusal is tried later too")

	// The node elected but still taking the group over names itself: stay.
	require.True(t, g.redirect(wire.NotLeader(4, "n4:7070", "taking the group over, retry")))
	require.Equal(t, "n4:7070", g.addr)

	// No coordinator named, the node unreachable or stopping: the next.
	require.True(t, g.redirect(wire.NotLeader(0, "", "coordinator")))
	require.Equal(t, "n1:7070", g.addr)
	require.True(t, g.redirect(errors.New("dial tcp n1:7070: connection refused")))
	require.Equal(t, "n2:7070", g.addr)
	require.True(t, g.redirect(wire.Errorf(wire.CodeShuttingDown, "the broker is shutting down")))
	require.Equal(t, "n3:7070", g.addr)

	// Refused for another reason: the same anywhere.
	require.False(t, g.redirect(wire.Errorf(wire.CodeInvalidArgument, "group \"g\" consumes topic \"x\"")))
	require.Equal(t, "n3:7070", g.addr)

	single := &GroupConsumer{addr: "b:7070"}
	require.False(t, single.redirect(named))
	require.Equal(t, "b:7070", single.addr)
}
