package transport

import (
	"errors"
	"fmt"
)

// Errors of the frame decoder and the handshake. The connection that
// causes one is closed; each is counted in Stats and logged.
var (
	// ErrClosed is returned by operations on a closed transport.
	ErrClosed = errors.New("transport: closed")
	// ErrFrameTooLarge: a frame's length is over the reader's MaxFrameBytes.
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrChecksum: a frame's payload does not match its CRC32C.
	ErrChecksum = errors.New("transport: frame checksum mismatch")
	// ErrMalformed: a payload or handshake that cannot be parsed.
	ErrMalformed = errors.New("transport: malformed frame")
	// ErrBadMagic: the peer does not speak this protocol (a client of the
	// broker's port, a TLS client on a plaintext port, a port scanner).
	ErrBadMagic = errors.New("transport: bad magic")
	// ErrVersion: the peer speaks a version of the protocol this node does not.
	ErrVersion = errors.New("transport: unsupported protocol version")
	// ErrWrongCluster: the peer belongs to another cluster.
	ErrWrongCluster = errors.New("transport: peer belongs to another cluster")
	// ErrWrongNode: the node at the peer's address is not the node dialed
	// (an address reused by a replaced node, or a stale peer table).
	ErrWrongNode = errors.New("transport: peer is not the node dialed")
	// ErrNotAdmitted: TCPConfig.Admit refused a peer (this node's at the
	// peer, whose reason follows, or the peer here): a node whose data
	// directory is not the one the cluster met (lost or replaced), or a
	// node removed from the cluster.
	ErrNotAdmitted = errors.New("transport: not admitted")
	// ErrNotYet: a node not ready to judge data directories yet (its
	// metadata is being read back at start) asks the peer to come back.
	// TCPConfig.Admit returns it (or wraps it); the dialer retries after
	// its backoff.
	ErrNotYet = errors.New("transport: peer not ready to admit nodes yet")
	// ErrRefused: the peer refused the handshake for a reason this node
	// does not know.
	ErrRefused = errors.New("transport: handshake refused")
)

// RefusedError is a peer's refusal of this node (TCPConfig.Admit there),
// with the reason the peer gave; errors.Is finds ErrNotAdmitted in it.
type RefusedError struct {
	Peer   uint64 // the node that refused
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v by node %d: %s", ErrNotAdmitted, e.Peer, e.Reason)
}

func (e *RefusedError) Unwrap() error { return ErrNotAdmitted }

// isFormat reports whether err means the peer sent bytes that break the
// protocol, as opposed to an I/O error or an orderly close.
func isFormat(err error) bool {
	return errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrChecksum) || errors.Is(err, ErrMalformed) ||
		errors.Is(err, ErrBadMagic) || errors.Is(err, ErrVersion)
}
