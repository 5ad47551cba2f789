package transport

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// readBufferSize is the buffered reader of each inbound connection: frames
// of small messages come in few reads.
const readBufferSize = 64 << 10

// acceptLoop accepts peers' connections until the listener closes.
func (t *TCP) acceptLoop() {
	defer t.wg.Done()
	pause := time.Duration(0)
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: wait a little, as
			// net/http does, rather than spin.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			t.log.Warn("cluster transport: accept failed", "err", err, "retry_in", pause)
			select {
			case <-time.After(pause):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		pause = 0
		if !t.track(conn) {
			_ = conn.Close()
			return
		}
		t.wg.Add(1)
		go t.serve(conn)
	}
}

// track registers an inbound connection so Close can close it; false
// when the transport is closing.
func (t *TCP) track(conn net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[conn] = struct{}{}
	t.stats.inbound.Add(1)
	return true
}

func (t *TCP) untrack(conn net.Conn, from uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, conn)
	if t.byNode[from] == conn {
		delete(t.byNode, from)
	}
	t.stats.inbound.Add(-1)
}

// adopt makes conn node from's inbound connection, closing an older one:
// a peer that reconnected will not write to that one again, and closing
// it keeps a single reader, so one connection's order, per node.
func (t *TCP) adopt(conn net.Conn, from uint64) {
	t.mu.Lock()
	if old := t.byNode[from]; old != nil {
		_ = old.Close()
	}
	t.byNode[from] = conn
	t.mu.Unlock()
	// The peer is back (a restart, a healed link): the connection to it
	// is tried at once rather than after a backoff of up to BackoffMax,
	// which kept a restarted node deaf for seconds.
	if p := (*t.peers.Load())[from]; p != nil {
		select {
		case p.retry <- struct{}{}:
		default:
		}
	}
}

// serve runs one inbound connection: the handshakes, then frames to the
// handler until the connection fails or breaks the protocol.
func (t *TCP) serve(raw net.Conn) {
	defer t.wg.Done()
	var from uint64
	defer func() {
		_ = raw.Close()
		t.untrack(raw, from)
	}()
	conn, from, err := t.serverHandshake(raw)
	if err != nil {
		t.stats.refused.Add(1)
		switch {
		case t.ctx.Err() != nil:
		case errors.Is(err, ErrNotAdmitted): // the dialer backs off: at most one line per peer every few seconds
			t.log.Error("cluster transport: node not admitted", "remote", raw.RemoteAddr().String(), "err", err)
		case errors.Is(err, ErrNotYet):
			t.log.Debug("cluster transport: node asked to come back once this one is ready", "remote", raw.RemoteAddr().String())
		default:
			t.warnRarely(&t.warnedRefused, "cluster transport: inbound connection refused", "remote", raw.RemoteAddr().String(), "err", err)
		}
		return
	}
	t.adopt(raw, from)
	err = t.readFrames(conn, from)
	switch {
	case isFormat(err):
		t.stats.badFrames.Add(1)
		t.log.Warn("cluster transport: bad frame, connection closed", "peer", from, "remote", raw.RemoteAddr().String(), "err", err)
	case !errors.Is(err, io.EOF) && t.ctx.Err() == nil:
		t.log.Debug("cluster transport: inbound connection closed", "peer", from, "err", err)
	}
}

// serverHandshake runs TLS (when configured) and the transport handshake
// under HandshakeTimeout, and answers the hello. It returns the
// connection to read frames from and the peer's node id.
func (t *TCP) serverHandshake(raw net.Conn) (net.Conn, uint64, error) {
	_ = raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	conn := raw
	if t.cfg.ServerTLS != nil {
		tc := tls.Server(raw, t.cfg.ServerTLS)
		if err := tc.Handshake(); err != nil {
			return nil, 0, err
		}
		conn = tc
	}
	h, err := readHello(conn)
	if err != nil {
		return nil, 0, err // a stranger or a broken peer: no answer
	}
	status, verr := h.check(t.cfg.ClusterID, t.cfg.NodeID)
	if verr == nil && t.cfg.Admit != nil {
		switch err := t.cfg.Admit(h.from, h.disk); {
		case errors.Is(err, ErrNotYet):
			status, verr = statusNotYet, err
		case err != nil:
			status, verr = statusNotAdmitted, fmt.Errorf("%w: node %d (data directory %x): %w", ErrNotAdmitted, h.from,
				h.disk[:], err)
		}
	}
	a := ack{status: status, node: t.cfg.NodeID, disk: t.cfg.Disk}
	if verr != nil {
		a.reason = verr.Error()
	}
	if _, err := conn.Write(appendAck(nil, a)); err != nil {
		return nil, 0, err
	}
	if verr != nil {
		return nil, 0, verr
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, h.from, nil
}

// readFrames hands each frame's messages to the handler, in order, until
// an error, which it returns (io.EOF for a peer's orderly close).
func (t *TCP) readFrames(conn net.Conn, from uint64) error {
	fr := frameReader{r: bufio.NewReaderSize(conn, readBufferSize), max: t.cfg.MaxFrameBytes}
	for {
		payload, err := fr.next()
		if err != nil {
			return err
		}
		envs, err := decodePayload(payload)
		if err != nil {
			return err
		}
		s := &t.stats
		s.framesRecv.Add(1)
		s.msgsRecv.Add(uint64(len(envs)))
		s.bytesRecv.Add(uint64(frameHeaderSize + len(payload)))
		if len(envs) > 0 {
			t.cfg.Handler(from, envs)
		}
	}
}
