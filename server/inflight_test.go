package server

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Past the bound, connections paused for memory (producers whose acks
// wait for the disk) are cut only after the others, even when they hold
// more: half-read frames are what an attack holds.
func TestPausedProducersAreCutLast(t *testing.T) {
	mk := func(name string, bytes int64, paused bool) *session {
		s := &session{by: Origin{Remote: name}}
		s.unprocessed.Store(bytes)
		s.pausedA.Store(paused)
		return s
	}
	names := func(ss []*session) (out []string) {
		for _, s := range ss {
			out = append(out, s.by.Remote)
		}
		return out
	}
	producer := mk("producer", 8<<20, true)
	small, big := mk("small half frame", 1<<20, false), mk("big half frame", 3<<20, false)
	holders := []*session{producer, small, big}
	require.Equal(t, []string{"big half frame"}, names(pickCuts(holders, 2<<20)))
	require.Equal(t, []string{"big half frame", "small half frame"}, names(pickCuts(holders, 4<<20)))
	require.Equal(t, []string{"big half frame", "small half frame", "producer"}, names(pickCuts(holders, 5<<20)))
	require.Empty(t, pickCuts(holders, 0))
}
