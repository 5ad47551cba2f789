package server

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Authentication and authorization of a session.
//
// With Config.Auth set, Hello must carry credentials (or arrive on a TLS
// connection whose client certificate was verified): SCRAM-SHA-256 takes
// two more round trips (AuthChallenge, AuthContinue), TOKEN and EXTERNAL
// none. Until the exchange succeeds the connection may send nothing else,
// its frames are bounded to maxAuthFrame, and the handshake deadline runs.
// A failure answers AUTH_FAILED, counts against the source address's
// failure budget (Config.AuthFailures) and closes the connection.
//
// Authorization is asked of the store once per connection, resource and
// operation, and the answers are kept in the session until the store's
// generation moves (a rule, user or tenant changed): the publish path
// pays one atomic load and one map lookup per batch, none per message.

// maxAuthFrame bounds a frame before the handshake ends: credentials are
// small, and an unauthenticated client must not make the broker hold a
// maximum-size frame per connection.
const maxAuthFrame = 64 << 10

// maxCachedDecisions bounds a session's cached decisions: a client naming
// ever new topics costs the store's lookup, not the broker's memory.
const maxCachedDecisions = 4096

// authState is a session's principal and cached decisions.
type authState struct {
	principal *auth.Principal
	scram     *auth.ScramConv // an exchange under way
	helloVer  uint16          // the version Hello negotiated, while SCRAM runs
	helloName string
	gen       uint64
	seq       uint64 // the server's revocation count when the credentials were checked
	begun     bool   // an attempt was taken from the address's budget (FailLimiter.Begin)
	decisions map[decisionKey]bool
	publish   map[string]bool // publish decisions by topic name: the hot path's lookup, without a key to build
	denied    map[decisionKey]int
	qualified map[string]string // a tenant's topic names, qualified (tenant.go)
	expiry    *time.Timer       // closes the connection when its credential expires
	// user is the principal's tenant-qualified name, for the revocation
	// walk from other goroutines (nil for the admin token);
	// hasPrincipal is set once the session has any.
	user         atomic.Pointer[string]
	hasPrincipal atomic.Bool
}

type decisionKey struct {
	res  auth.Resource
	op   auth.Op
	name string
}

// authOn reports whether the broker authenticates clients.
func (s *session) authOn() bool { return s.srv.cfg.Auth != nil }

// authenticate handles Hello's credentials once its version was agreed.
func (s *session) authenticate(corr uint32, v uint16, h *wire.Hello) error {
	now := time.Now()
	s.auth.seq = s.srv.revokeSeq.Load()
	if ok, wait := s.srv.cfg.AuthFailures.Begin(s.by.Remote, now); !ok {
		return s.authFailed(corr, h.AuthMechanism, wire.Errorf(wire.CodeAuthFailed,
			"too many failed authentications from this address; retry in "+wait.Round(time.Second).String()), false)
	}
	s.auth.begun = true
	a := s.srv.cfg.Auth
	var p *auth.Principal
	var err error
	certName := ""
	if id, ok := s.tlsIdentity(); ok {
		certName = id.CommonName
	}
	switch h.AuthMechanism {
	case "":
		if certName == "" {
			return s.authFailed(corr, "", wire.Errorf(wire.CodeAuthFailed,
				"authentication required: send credentials in Hello (SCRAM-SHA-256 or TOKEN), or a client certificate over TLS"), true)
		}
		p, err = a.External(certName)
	case auth.MechExternal:
		if certName == "" {
			return s.authFailed(corr, h.AuthMechanism, wire.Errorf(wire.CodeAuthFailed,
				"EXTERNAL needs a verified client certificate (a TLS listener with a client CA)"), true)
		}
		p, err = a.External(certName)
	case auth.MechToken:
		p, err = a.Token(string(h.AuthData))
	case auth.MechSCRAM:
		c := a.NewScram()
		answer, done, _, serr := c.Step(h.AuthData)
		if serr != nil || done {
			if serr == nil {
				serr = auth.ErrBadCredentials
			}
			return s.authFailed(corr, h.AuthMechanism, wire.Errorf(wire.CodeAuthFailed, serr.Error()), true)
		}
		s.auth.scram, s.auth.helloVer, s.auth.helloName = c, v, h.ClientName
		s.sendFrame(wire.TypeAuthChallenge, corr, wire.AppendAuth(s.scratch[:0], answer))
		return nil
	default:
		return s.authFailed(corr, h.AuthMechanism, wire.Errorf(wire.CodeAuthFailed,
			"unknown authentication mechanism "+strconv.Quote(h.AuthMechanism)+"; this broker takes SCRAM-SHA-256, TOKEN and EXTERNAL"), false)
	}
	if err != nil {
		return s.authFailed(corr, h.AuthMechanism, wire.Errorf(wire.CodeAuthFailed, err.Error()), true)
	}
	return s.accept(corr, v, h.ClientName, p)
}

// authContinue takes the client's next SCRAM message.
func (s *session) authContinue(f wire.Frame) error {
	c := s.auth.scram // its keys were read at Hello, with s.auth.seq
	data, err := wire.DecodeAuth(f.Body)
	if err != nil {
		s.refused(err)
		return s.malformed(f.Corr, err)
	}
	answer, done, p, err := c.Step(data)
	if err != nil {
		return s.authFailed(f.Corr, auth.MechSCRAM, wire.Errorf(wire.CodeAuthFailed, err.Error()), true)
	}
	s.sendFrame(wire.TypeAuthChallenge, f.Corr, wire.AppendAuth(s.scratch[:0], answer))
	if !done {
		return nil
	}
	s.auth.scram = nil
	return s.accept(f.Corr, s.auth.helloVer, s.auth.helloName, p)
}

// authFailed refuses a connection's credentials and closes it. counted
// failures spend the address's budget; a refusal for the budget itself,
// or a mechanism the broker does not know, does not.
func (s *session) authFailed(corr uint32, mech string, err *wire.Error, counted bool) error {
	if counted {
		s.srv.authFailures.Add(1)
	} else if s.auth.begun {
		s.srv.cfg.AuthFailures.Succeeded(s.by.Remote, time.Now()) // not a credential's failure: the attempt is given back
	}
	s.auth.begun = false
	s.auth.scram = nil
	// The code already says "authentication failed".
	err = wire.Errorf(err.Code, strings.TrimPrefix(err.Message, "authentication failed: "))
	s.sendErr(corr, err)
	s.srv.emit(telemetry.Event{Kind: telemetry.EventAuth, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
		Action: "login " + mech, Target: "broker", Err: err})
	s.refused(err)
	return errClose
}

// accept ends the handshake: the connection is p's (nil when
// authentication is off).
func (s *session) accept(corr uint32, v uint16, name string, p *auth.Principal) error {
	s.handshaken, s.version = true, v
	s.t.handshaken()
	s.info.name.Store(&name)
	if s.auth.begun {
		s.srv.cfg.AuthFailures.Succeeded(s.by.Remote, time.Now())
		s.auth.begun = false
	}
	if p != nil {
		s.auth.principal = p
		s.auth.hasPrincipal.Store(true)
		s.auth.decisions = map[decisionKey]bool{}
		s.auth.publish = map[string]bool{}
		s.auth.gen = s.srv.cfg.Auth.Store.Gen()
		var u string
		if !p.AdminToken { // the admin token is no store user's: nothing revokes it
			u = wire.Qualify(p.Tenant, p.User)
			s.auth.user.Store(&u)
		}
		s.by.Principal, s.by.Tenant = p.User, p.Tenant
		s.srv.authSuccesses.Add(1)
		if u != "" && s.srv.revoked(s, u) { // deleted, disabled or re-passworded while the exchange ran
			return s.authFailed(corr, p.Mechanism, wire.Errorf(wire.CodeAuthFailed, "the user was deleted or disabled"), false)
		}
		if err := s.admitTenant(p); err != nil {
			s.sendErr(corr, err)
			s.refused(err)
			return errClose
		}
		s.srv.emit(telemetry.Event{Kind: telemetry.EventAuth, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
			Principal: p.User, Tenant: p.Tenant, Action: "login " + p.Mechanism, Target: "broker"})
		if !p.Expires.IsZero() {
			s.expireAt(p.Expires)
		}
	}
	s.srv.log.Debug("client connected", "remote", s.t.remoteAddr(), "name", name, "version", v, "principal", p.String())
	ok := wire.HelloOK{Version: v, MaxFrameBytes: uint32(s.srv.cfg.MaxFrameBytes),
		MaxMessageBytes: uint32(s.srv.cfg.MaxMessageBytes), ServerName: "ratatoskr", RunID: s.srv.runID}
	s.sendFrame(wire.TypeHelloOK, corr, ok.Append(s.scratch[:0]))
	return nil
}

// freshDecisions drops the cached decisions when the rules changed.
func (s *session) freshDecisions() {
	if g := s.srv.cfg.Auth.Store.Gen(); g != s.auth.gen {
		clear(s.auth.decisions)
		clear(s.auth.publish)
		s.auth.gen = g
		s.refreshQuotas()
	}
}

// may reports whether the session's principal may do op on the resource;
// with authentication off, everything is allowed.
func (s *session) may(res auth.Resource, name string, op auth.Op) error {
	p := s.auth.principal
	if p == nil {
		return nil
	}
	s.freshDecisions()
	k := decisionKey{res, op, name}
	ok, cached := s.auth.decisions[k]
	if !cached {
		ok = s.srv.cfg.Auth.Store.Authorize(p, res, name, op)
		if len(s.auth.decisions) < maxCachedDecisions {
			s.auth.decisions[k] = ok
		}
	}
	if ok {
		return nil
	}
	return s.denied(k, cached)
}

// mayPublish is may for publishing to a topic, on the hot path: one map
// lookup keyed by the frame's bytes, without allocating.
func (s *session) mayPublish(topicName []byte) error {
	if s.auth.principal == nil {
		return nil
	}
	s.freshDecisions()
	if ok, cached := s.auth.publish[string(topicName)]; cached {
		if ok {
			return nil
		}
		return s.denied(decisionKey{auth.ResTopic, auth.OpPublish, string(topicName)}, true)
	}
	name := string(topicName)
	ok := s.srv.cfg.Auth.Store.Authorize(s.auth.principal, auth.ResTopic, name, auth.OpPublish)
	if len(s.auth.publish) < maxCachedDecisions {
		s.auth.publish[name] = ok
	}
	if ok {
		return nil
	}
	return s.denied(decisionKey{auth.ResTopic, auth.OpPublish, name}, false)
}

// denied builds a NOT_AUTHORIZED error and audits it: the first denial of
// a resource and operation at once, repeats counted and reported together
// when the connection closes (reportDenials).
func (s *session) denied(k decisionKey, repeat bool) error {
	p := s.auth.principal
	s.srv.authDenials.Add(1)
	err := wire.Errorf(wire.CodeNotAuthorized, p.String()+" may not "+k.op.String()+" "+string(k.res)+" "+strconv.Quote(k.name))
	if repeat {
		if s.auth.denied == nil {
			s.auth.denied = map[decisionKey]int{}
		}
		if _, ok := s.auth.denied[k]; ok || len(s.auth.denied) < maxCachedDecisions {
			s.auth.denied[k]++
		}
		return err
	}
	s.srv.emit(telemetry.Event{Kind: telemetry.EventAccessDenied, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
		Principal: p.User, Tenant: p.Tenant, Action: k.op.String(), Target: string(k.res) + "/" + k.name, Count: 1, Err: err})
	return err
}

// reportDenials audits the repeated denials not yet reported, one event per
// resource and operation with their count.
func (s *session) reportDenials() {
	p := s.auth.principal
	for k, n := range s.auth.denied {
		s.srv.emit(telemetry.Event{Kind: telemetry.EventAccessDenied, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
			Principal: p.User, Tenant: p.Tenant, Action: k.op.String() + " (repeated)", Target: string(k.res) + "/" + k.name, Count: n,
			Err: wire.ErrNotAuthorized})
	}
	s.auth.denied = nil
}

// RevokeUser closes the connections of a user of a tenant that was
// deleted, disabled or given a new password (the admin token's never):
// each gets AUTH_FAILED and is closed on its own goroutine. It returns how
// many were.
func (srv *Server) RevokeUser(user, tenant string) int {
	key := wire.Qualify(tenant, user)
	srv.revokedMu.Lock()
	srv.revokedAt[key] = srv.revokeSeq.Add(1)
	srv.revokedMu.Unlock()
	n := 0
	srv.sessions.Range(func(k, _ any) bool {
		s := k.(*session)
		if u := s.auth.user.Load(); u != nil && *u == key {
			n++
			s.t.onLoop(func() bool {
				if s.closed {
					return false
				}
				s.quota.held = false
				s.sendErr(0, wire.Errorf(wire.CodeAuthFailed, "the user "+strconv.Quote(user)+" was deleted, disabled or given a new password"))
				return true
			})
		}
		return true
	})
	return n
}

// revoked reports whether user was revoked since s's credentials were checked:
// a login that raced with a deletion must not outlive it.
func (srv *Server) revoked(s *session, user string) bool {
	srv.revokedMu.Lock()
	defer srv.revokedMu.Unlock()
	return srv.revokedAt[user] > s.auth.seq
}

// AuthCounters reports the native protocol's authentications that
// succeeded and failed, and the operations denied.
func (srv *Server) AuthCounters() (ok, failed, denied uint64) {
	return srv.authSuccesses.Load(), srv.authFailures.Load(), srv.authDenials.Load()
}

// expireAt closes the connection when its credential expires (a JWT's
// exp): the client must log in again with a fresh one.
func (s *session) expireAt(at time.Time) {
	s.auth.expiry = time.AfterFunc(time.Until(at)+auth.JWTLeeway, func() {
		s.t.onLoop(func() bool {
			if s.closed {
				return false
			}
			s.quota.held = false // the error goes out whatever the delivery quota holds back
			s.sendErr(0, wire.Errorf(wire.CodeAuthFailed, "the connection's token expired; log in again with a new one"))
			return true
		})
	})
}

// Recheck has every authenticated session check again, on its own
// goroutine, what it holds under the store's old contents: its cached
// decisions and its tenant's quotas are refreshed, and a connection whose
// subscription or group membership is no longer allowed gets
// NOT_AUTHORIZED (corr 0) and is closed: its client reconnects, and its
// resubscription is refused. The store calls it after every change.
func (srv *Server) Recheck() {
	srv.sessions.Range(func(k, _ any) bool {
		s := k.(*session)
		if s.auth.hasPrincipal.Load() {
			s.t.onLoop(s.recheck)
		}
		return true
	})
}

// recheck is Recheck on the session's goroutine.
func (s *session) recheck() (closeConn bool) {
	if s.closed || s.auth.principal == nil {
		return false
	}
	s.freshDecisions()
	for k := range s.subs {
		if err := s.may(auth.ResTopic, wire.Unqualified(k.topic.Name), auth.OpSubscribe); err != nil {
			return s.accessRevoked(err)
		}
	}
	for name, m := range s.members {
		err := s.may(auth.ResGroup, name, auth.OpJoin)
		if err == nil {
			err = s.may(auth.ResTopic, wire.Unqualified(m.Topic().Name()), auth.OpSubscribe)
		}
		if err != nil {
			return s.accessRevoked(err)
		}
	}
	return false
}

// accessRevoked ends a connection that holds what its principal may no
// longer have; the error goes out before the close, whatever the
// delivery quota holds back.
func (s *session) accessRevoked(err error) bool {
	s.quota.held = false
	s.sendErr(0, wire.Errorf(wire.CodeNotAuthorized, "access revoked: "+err.Error()))
	return true
}
