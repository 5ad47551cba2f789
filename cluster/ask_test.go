package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// askCall is the outcome of one Host.Ask on a driven host.
type askCall struct {
	body  []byte
	err   error
	calls int
}

func askAt(h *Host, to uint64, kind string, body string) *askCall {
	a := &askCall{}
	h.Ask(to, kind, []byte(body), func(b []byte, err error) {
		a.body, a.err = b, err
		a.calls++
	})
	return a
}

// TestAsk: a node request is answered by the other node's OnAsk; a node
// without one answers empty; one whose answer never comes fails after
// two election timeouts; a pending one fails when the host stops. Raft
// sees none of it.
func TestAsk(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	var asked []string
	d.hosts[2].cfg.OnAsk = func(from uint64, kind string, body []byte, answer func([]byte)) {
		asked = append(asked, kind)
		answer(append([]byte("re:"), body...))
	}
	a := askAt(d.hosts[1], 2, "echo", "hi")
	d.hosts[1].Process()
	require.Zero(t, a.calls)
	d.settle()
	d.settle() // the answer is sent in node 2's next pass
	require.Equal(t, 1, a.calls)
	require.NoError(t, a.err)
	require.Equal(t, "re:hi", string(a.body))
	require.Equal(t, []string{"echo"}, asked)
	require.Zero(t, d.state(1, 1).Term, "raft saw nothing")

	none := askAt(d.hosts[1], 3, "echo", "hi")
	d.settle()
	d.settle()
	require.Equal(t, 1, none.calls)
	require.NoError(t, none.err)
	require.Empty(t, none.body, "a node with no OnAsk answers empty")

	lost := askAt(d.hosts[1], 2, "echo", "again")
	for i := 0; i < 3*DefaultElectionTicks && lost.calls == 0; i++ {
		d.hosts[1].Tick()
		d.settleDropping(func(from, to uint64, e Envelope) bool {
			return e.Group == 0 && e.Msg.Type == raftpb.MsgSnapStatus
		})
	}
	require.Equal(t, 1, lost.calls)
	require.ErrorIs(t, lost.err, ErrAskTimeout)

	pending := askAt(d.hosts[1], 2, "echo", "late")
	d.hosts[1].Process()
	d.hosts[1].Stop()
	require.Equal(t, 1, pending.calls)
	require.ErrorIs(t, pending.err, ErrStopped)
	require.ErrorIs(t, askAt(d.hosts[1], 2, "echo", "x").err, ErrStopped)
}
