package wire

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNotLeaderNamesTheLeader(t *testing.T) {
	err := NotLeader(3, "127.0.0.1:7072", "partition 2 of orders")
	require.Equal(t, CodeNotLeader, err.Code)
	id, addr, ok := LeaderOf(err)
	require.True(t, ok)
	require.Equal(t, uint64(3), id)
	require.Equal(t, "127.0.0.1:7072", addr)
	id, addr, ok = LeaderOf(NotLeader(2, "[::1]:7070", ""))
	require.True(t, ok)
	require.Equal(t, uint64(2), id)
	require.Equal(t, "[::1]:7070", addr)
	// Through an Error frame and back.
	body := AppendError(nil, err.Code, err.Message)
	dec, derr := DecodeError(body)
	require.NoError(t, derr)
	_, addr, ok = LeaderOf(dec)
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:7072", addr)
	for _, e := range []error{NotLeader(0, "", "election"), Errorf(CodeNotLeader, "leader x y"), Errorf(CodeInternal, "leader 1 a:1"), nil} {
		_, _, ok := LeaderOf(e)
		require.False(t, ok, "%v", e)
	}
	require.Equal(t, "ratatoskr: not leader: no leader: election", NotLeader(0, "x", "election").Error())
}
