package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Handshake constants; part of the format (doc.go draws the layouts).
const (
	// Version is the protocol version this package speaks.
	Version uint16 = 1
	// MaxClusterIDLen is the longest cluster id: its length is one byte.
	MaxClusterIDLen = 255

	helloFixedSize = 4 + 2 + 8 + 8 + 1 // magic, version, from, to, cluster id length
	ackSize        = 4 + 2 + 1 + 8     // magic, version, status, node id
)

// magic opens both sides of the handshake: "RTKC", Ratatoskr cluster.
var magic = [4]byte{'R', 'T', 'K', 'C'}

// Handshake answers (the ack's status byte); part of the format.
const (
	statusOK           byte = 0
	statusWrongCluster byte = 1
	statusWrongNode    byte = 2
	statusVersion      byte = 3
)

// hello is what the dialing node says first.
type hello struct {
	version  uint16
	from, to uint64 // to is the node the dialer wants; 0 for any
	cluster  string
}

func appendHello(dst []byte, h hello) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, h.version)
	dst = binary.BigEndian.AppendUint64(dst, h.from)
	dst = binary.BigEndian.AppendUint64(dst, h.to)
	dst = append(dst, byte(len(h.cluster)))
	return append(dst, h.cluster...)
}

// readHello reads a hello. A wrong magic is reported before anything else
// is read, so a stranger's bytes are not taken for a length.
func readHello(r io.Reader) (hello, error) {
	var b [helloFixedSize + MaxClusterIDLen]byte
	if _, err := io.ReadFull(r, b[:helloFixedSize]); err != nil {
		return hello{}, err
	}
	if [4]byte(b[:4]) != magic {
		return hello{}, fmt.Errorf("%w: % x", ErrBadMagic, b[:4])
	}
	h := hello{
		version: binary.BigEndian.Uint16(b[4:]),
		from:    binary.BigEndian.Uint64(b[6:]),
		to:      binary.BigEndian.Uint64(b[14:]),
	}
	n := int(b[22])
	if _, err := io.ReadFull(r, b[helloFixedSize:helloFixedSize+n]); err != nil {
		return hello{}, err
	}
	h.cluster = string(b[helloFixedSize : helloFixedSize+n])
	if h.from == 0 {
		return hello{}, fmt.Errorf("%w: node id 0", ErrMalformed)
	}
	return h, nil
}

// ack is the accepting node's answer.
type ack struct {
	status byte
	node   uint64
}

func appendAck(dst []byte, a ack) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, Version)
	dst = append(dst, a.status)
	return binary.BigEndian.AppendUint64(dst, a.node)
}

// readAck reads the answer to a hello and turns a refusal into its error.
func readAck(r io.Reader) error {
	var b [ackSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	if [4]byte(b[:4]) != magic {
		return fmt.Errorf("%w: % x", ErrBadMagic, b[:4])
	}
	switch status := b[6]; status {
	case statusOK:
		return nil
	case statusWrongCluster:
		return ErrWrongCluster
	case statusWrongNode:
		return fmt.Errorf("%w: it is node %d", ErrWrongNode, binary.BigEndian.Uint64(b[7:]))
	case statusVersion:
		return fmt.Errorf("%w: the peer speaks %d", ErrVersion, binary.BigEndian.Uint16(b[4:]))
	default:
		return fmt.Errorf("%w: status %d", ErrRefused, status)
	}
}

// check is the accepting node's verdict on a hello: the status to answer
// and the error to log and count (nil for statusOK).
func (h hello) check(cluster string, self uint64) (byte, error) {
	switch {
	case h.version != Version:
		return statusVersion, fmt.Errorf("%w: %d from node %d", ErrVersion, h.version, h.from)
	case h.cluster != cluster:
		return statusWrongCluster, fmt.Errorf("%w: %q from node %d", ErrWrongCluster, h.cluster, h.from)
	case h.to != 0 && h.to != self:
		return statusWrongNode, fmt.Errorf("%w: node %d dialed node %d", ErrWrongNode, h.from, h.to)
	}
	return statusOK, nil
}
