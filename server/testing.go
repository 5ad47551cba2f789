package server

import "github.com/ratatoskr-mq/ratatoskr/outbox"

// What the broker's own tests (package engine, which run a whole broker)
// look at inside the network side. Nothing else calls these.

// Outbox is the outbox of the open connection from remote (the client's
// local address), or nil.
func (srv *Server) Outbox(remote string) *outbox.Outbox {
	if s := srv.sessionFrom(remote); s != nil {
		return s.out
	}
	return nil
}

// Kept reports whether the connection from remote is open and was not
// chosen by the inbound memory guard to be cut.
func (srv *Server) Kept(remote string) bool {
	s := srv.sessionFrom(remote)
	return s != nil && s.cutState.Load() == cutNone
}

func (srv *Server) sessionFrom(remote string) *session {
	var found *session
	srv.sessions.Range(func(k, _ any) bool {
		if s := k.(*session); s.by.Remote == remote {
			found = s
		}
		return found == nil
	})
	return found
}

// HandshakesHeld counts the connections the handshake deadlines still
// hold: those that have neither said Hello nor closed.
func (srv *Server) HandshakesHeld() int {
	h := &srv.adm.hs
	h.mu.Lock()
	defer h.mu.Unlock()
	held := 0
	for _, en := range h.queue {
		if en.c.Load() != nil {
			held++
		}
	}
	return held
}

// OnEnrolled makes f run after each registration with a loop, before its
// goroutine ends.
func (srv *Server) OnEnrolled(f func()) { srv.lis.enrolled.Store(&f) }

// CloseListenerSocket closes the listening socket under the accept loop,
// as a failure would.
func (srv *Server) CloseListenerSocket() error { return srv.lis.ln.Close() }

// SetListenerDown records that the native listener stopped for why, as
// the accept loop does when it fails (ListenerProblem then says so).
func (srv *Server) SetListenerDown(why string) { srv.listenerErr.Store(&why) }
