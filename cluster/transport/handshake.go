package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Handshake constants; part of the format (doc.go draws the layouts).
const (
	// Version is the protocol version this package speaks. Version 2 added
	// the data directory ids (DiskID).
	Version uint16 = 2
	// MaxClusterIDLen is the longest cluster id: its length is one byte.
	MaxClusterIDLen = 255

	helloFixedSize = 4 + 2 + 8 + 8 + DiskIDLen + 1 // magic, version, from, to, disk id, cluster id length
	ackSize        = 4 + 2 + 1 + 8 + DiskIDLen     // magic, version, status, node id, disk id
)

// magic opens both sides of the handshake: "RTKC", Ratatoskr cluster.
var magic = [4]byte{'R', 'T', 'K', 'C'}

// Handshake answers (the ack's status byte); part of the format.
const (
	statusOK           byte = 0
	statusWrongCluster byte = 1
	statusWrongNode    byte = 2
	statusVersion      byte = 3
	statusNotAdmitted  byte = 4 // TCPConfig.Admit refused the dialer; a reason follows the ack
	statusNotYet       byte = 5 // TCPConfig.Admit answered ErrNotYet: try again later
)

// maxReasonLen bounds the reason sent after a statusNotAdmitted ack (its
// length is a uint16 before it).
const maxReasonLen = 1024

// DiskIDLen is the length of a DiskID.
const DiskIDLen = 16

// DiskID names a node's data directory: it is drawn when the directory is
// made, and a node whose directory was lost or replaced comes back with
// another. The zero DiskID is none.
type DiskID [DiskIDLen]byte

// hello is what the dialing node says first.
type hello struct {
	version  uint16
	from, to uint64 // to is the node the dialer wants; 0 for any
	disk     DiskID // the dialer's data directory
	cluster  string
}

func appendHello(dst []byte, h hello) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, h.version)
	dst = binary.BigEndian.AppendUint64(dst, h.from)
	dst = binary.BigEndian.AppendUint64(dst, h.to)
	dst = append(dst, h.disk[:]...)
	dst = append(dst, byte(len(h.cluster)))
	return append(dst, h.cluster...)
}

// readHello reads a hello. A wrong magic is reported before anything else
// is read, so a stranger's bytes are not taken for a length.
func readHello(r io.Reader) (hello, error) {
	var b [helloFixedSize + MaxClusterIDLen]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return hello{}, err
	}
	if [4]byte(b[:4]) != magic {
		return hello{}, fmt.Errorf("%w: % x", ErrBadMagic, b[:4])
	}
	if _, err := io.ReadFull(r, b[4:helloFixedSize]); err != nil {
		return hello{}, err
	}
	h := hello{
		version: binary.BigEndian.Uint16(b[4:]),
		from:    binary.BigEndian.Uint64(b[6:]),
		to:      binary.BigEndian.Uint64(b[14:]),
		disk:    DiskID(b[22 : 22+DiskIDLen]),
	}
	n := int(b[helloFixedSize-1])
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
	disk   DiskID // the acceptor's data directory
	reason string // why, for statusNotAdmitted
}

func appendAck(dst []byte, a ack) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, Version)
	dst = append(dst, a.status)
	dst = binary.BigEndian.AppendUint64(dst, a.node)
	dst = append(dst, a.disk[:]...)
	if a.status == statusNotAdmitted {
		r := a.reason[:min(len(a.reason), maxReasonLen)]
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(r)))
		dst = append(dst, r...)
	}
	return dst
}

// readAck reads the answer to a hello and turns a refusal into its error;
// on success it returns the acceptor's data directory id.
func readAck(r io.Reader) (DiskID, error) {
	var b [ackSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return DiskID{}, err
	}
	if [4]byte(b[:4]) != magic {
		return DiskID{}, fmt.Errorf("%w: % x", ErrBadMagic, b[:4])
	}
	switch status := b[6]; status {
	case statusOK:
		return DiskID(b[15:]), nil
	case statusWrongCluster:
		return DiskID{}, ErrWrongCluster
	case statusWrongNode:
		return DiskID{}, fmt.Errorf("%w: it is node %d", ErrWrongNode, binary.BigEndian.Uint64(b[7:]))
	case statusVersion:
		return DiskID{}, fmt.Errorf("%w: the peer speaks %d", ErrVersion, binary.BigEndian.Uint16(b[4:]))
	case statusNotAdmitted:
		var n [2]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return DiskID{}, err
		}
		reason := make([]byte, min(int(binary.BigEndian.Uint16(n[:])), maxReasonLen))
		if _, err := io.ReadFull(r, reason); err != nil {
			return DiskID{}, err
		}
		return DiskID{}, &RefusedError{Peer: binary.BigEndian.Uint64(b[7:]), Reason: string(reason)}
	case statusNotYet:
		return DiskID{}, fmt.Errorf("%w: node %d", ErrNotYet, binary.BigEndian.Uint64(b[7:]))
	default:
		return DiskID{}, fmt.Errorf("%w: status %d", ErrRefused, status)
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
