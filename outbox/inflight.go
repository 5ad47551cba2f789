package outbox

import (
	"sync/atomic"
)

// cacheLine keeps Inflight's hot counter off the line its read-mostly
// fields share: 128 bytes, since amd64 fetches lines in adjacent pairs and
// arm64 cores have 128-byte lines.
const cacheLine = 128

// Inflight counts the bytes of inbound frames the broker holds and has not
// finished with, across every connection: the server adds what sits in
// its read buffers and half-read frames, and the bytes of each publish it
// hands to a shard; the shard takes a publish's bytes off when it answers
// it (ack or error). The server bounds the total (--max-inflight-bytes):
// past a share of its bound connections stop taking publishes, and Wake
// tells it when the total has fallen back (see server/inflight.go).
type Inflight struct {
	bytes atomic.Int64 // written by every loop and shard, once per batch
	_     [cacheLine]byte
	// Read-mostly: Done reads them on every answer, so they keep off the
	// line bytes bounces on.
	paused atomic.Int32 // connections waiting for the total to fall
	resume int64        // below this a paused connection may go on
	wake   func()
}

// NewInflight returns a counter that calls wake when the total falls to
// resume or below while connections are paused. wake must not block.
func NewInflight(resume int64, wake func()) *Inflight {
	return &Inflight{resume: resume, wake: wake}
}

// Add counts n more bytes (or fewer, for n < 0) and returns the total.
func (f *Inflight) Add(n int64) int64 { return f.bytes.Add(n) }

// Load returns the total.
func (f *Inflight) Load() int64 { return f.bytes.Load() }

// Done takes n bytes off; it wakes the paused connections once there is
// room again.
func (f *Inflight) Done(n int64) {
	if f.bytes.Add(-n) <= f.resume && f.paused.Load() > 0 {
		f.wake()
	}
}

// Pause counts a connection that waits for room.
func (f *Inflight) Pause() { f.paused.Add(1) }

// Unpause counts a connection that no longer waits.
func (f *Inflight) Unpause() { f.paused.Add(-1) }
