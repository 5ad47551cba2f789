package server

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// In-process connections for the gateways (gRPC, HTTP, WebSocket).
//
// A gateway serves its clients through sessions of the native protocol,
// the same sessions the native listeners drive: authentication, ACLs,
// tenant quotas, the slow-consumer bounds and the metrics are applied in
// one place, and a front end cannot go around them. ConnectLocal makes
// one such session on one end of a Unix socket pair, registered with the
// gnet event loops like an accepted connection (admission counts it), and
// returns the other end, which the gateway drives with the Go client.
// The session sees the gateway's client as its peer: its address (for
// logs, telemetry and the failed-authentication budget) and, on a mutual
// TLS front end, the certificate the front end verified, so EXTERNAL
// authenticates it as on the native TLS port.

// LocalPeer is who an in-process connection serves.
type LocalPeer struct {
	// Remote is the gateway client's address (host:port).
	Remote string
	// Cert is the client certificate the front end verified, or nil.
	Cert *x509.Certificate
	// Via names the front end ("grpc", "http", "ws"), shown in the admin
	// API's connection list.
	Via string
}

// ErrNoNativeLoops is ConnectLocal's error before Start, which starts the
// event loops that serve in-process connections (with or without a
// plaintext address).
var ErrNoNativeLoops = errors.New("in-process connections need a started server")

// localSocketBuffer is each end's socket buffer: room for a few batches
// in flight each way, as a loopback TCP connection has.
const localSocketBuffer = 1 << 20

// ConnectLocal opens an in-process connection to a new session serving
// peer, and returns the client's end. The connection counts against the
// listener's admission limits (MaxConnections, per-address handshakes)
// under peer.Remote's host; a refusal is an error.
func (srv *Server) ConnectLocal(peer LocalPeer) (net.Conn, error) {
	l := srv.lis
	if l == nil {
		return nil, ErrNoNativeLoops
	}
	if srv.draining.Load() {
		return nil, ErrShuttingDown
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("in-process connection: %w", err)
	}
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, localSocketBuffer)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, localSocketBuffer)
	}
	brokerEnd, err := fileConn(fds[0], "ratatoskr-local-broker")
	if err != nil {
		_ = unix.Close(fds[1])
		return nil, err
	}
	clientEnd, err := fileConn(fds[1], "ratatoskr-local-client")
	if err != nil {
		_ = brokerEnd.Close()
		return nil, err
	}
	addr := peer.Remote
	if h, _, err := net.SplitHostPort(peer.Remote); err == nil {
		addr = h
	}
	if why, ok := srv.adm.admit(addr, srv.preConnections()); !ok {
		_ = brokerEnd.Close()
		_ = clientEnd.Close()
		return nil, fmt.Errorf("connection refused: %s", why)
	}
	acc := &accepted{addr: addr, l: l, local: &peer}
	l.enrolling.Add(1)
	l.enroll(brokerEnd, acc) // closes brokerEnd: gnet holds a duplicate
	acc.release()
	if !acc.opened || acc.t == nil {
		_ = clientEnd.Close()
		if srv.draining.Load() {
			return nil, ErrShuttingDown
		}
		return nil, errors.New("in-process connection: not registered with an event loop")
	}
	return clientEnd, nil
}

// fileConn makes a net.Conn of a socket descriptor, which it takes.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	_ = f.Close() // FileConn duplicated it
	if err != nil {
		return nil, fmt.Errorf("in-process connection: %w", err)
	}
	return c, nil
}
