package gateway_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	"github.com/ratatoskr-mq/ratatoskr/server"
)

const adminToken = "gateway-test-admin-token"

// startSecure runs a broker with authentication on, user alice allowed
// to publish and subscribe topic "orders" only.
func startSecure(t *testing.T, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	e := startBroker(t, func(c *engine.Config) {
		c.Auth, c.AdminToken, c.AutoCreateTopics = true, adminToken, false
		c.HTTPAddr = "127.0.0.1:0" // the admin token is the HTTP side's
		if mutate != nil {
			mutate(c)
		}
	})
	sec := e.Security()
	require.NoError(t, sec.AddUser("alice", "", auth.RoleUser, "correct horse"))
	_, err := sec.AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "orders",
		Ops: auth.OpPublish | auth.OpSubscribe | auth.OpDescribe})
	require.NoError(t, err)
	ctx := t.Context()
	admin, release, err := e.Gateway().Acquire(ctx, "test", gateway.Credentials{Token: adminToken, Remote: "127.0.0.1:1"})
	require.NoError(t, err)
	defer release()
	for _, name := range []string{"orders", "secret"} {
		require.NoError(t, admin.CreateTopic(ctx, name, client.TopicConfig{}))
	}
	return e
}

// The broker authenticates and authorizes a gateway's session as it does
// a native connection: no credentials or wrong ones are refused, a user
// may do what its rules allow and nothing else.
func TestSessionAuthenticatesAndAuthorizes(t *testing.T) {
	e := startSecure(t, nil)
	g, ctx := e.Gateway(), t.Context()

	for _, cred := range []gateway.Credentials{
		{Remote: "192.0.2.1:1"},
		{User: "alice", Password: "wrong horse", Remote: "192.0.2.1:2"},
		{Token: "not-a-token", Remote: "192.0.2.1:3"},
	} {
		_, _, err := g.Acquire(ctx, "test", cred)
		require.ErrorIs(t, err, client.ErrAuthFailed, "%+v", cred)
		require.Equal(t, gateway.KindUnauthenticated, gateway.KindOf(err))
	}
	require.Equal(t, 1, g.Sessions(), "the admin's session only: a failed authentication is not kept")

	alice := gateway.Credentials{User: "alice", Password: "correct horse", Remote: "192.0.2.2:1"}
	s, release, err := g.Acquire(ctx, "test", alice)
	require.NoError(t, err)
	defer release()
	acks, err := s.PublishBatch(ctx, "orders", []client.Message{{Value: []byte("x")}})
	require.NoError(t, err)
	require.Equal(t, int64(0), acks[0].Offset)
	_, err = s.PublishBatch(ctx, "secret", []client.Message{{Value: []byte("x")}})
	require.ErrorIs(t, err, client.ErrNotAuthorized)
	require.Equal(t, gateway.KindDenied, gateway.KindOf(err))
	_, err = s.Fetch(ctx, "secret", 0, client.Earliest)
	require.Equal(t, gateway.KindDenied, gateway.KindOf(err))
	require.Equal(t, gateway.KindDenied, gateway.KindOf(s.CreateTopic(ctx, "mine", client.TopicConfig{})))
}

// A deleted user's shared session is cut by the broker, and the gateway
// does not hand it out again: the next request authenticates afresh and
// is refused.
func TestSessionOfDeletedUserIsNotReused(t *testing.T) {
	e := startSecure(t, nil)
	g, ctx := e.Gateway(), t.Context()
	alice := gateway.Credentials{User: "alice", Password: "correct horse", Remote: "192.0.2.2:1"}
	s, release, err := g.Acquire(ctx, "test", alice)
	require.NoError(t, err)
	release()
	require.NoError(t, e.Security().DeleteUser("alice"))
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the deleted user's session stayed open")
	}
	_, _, err = g.Acquire(ctx, "test", alice)
	require.ErrorIs(t, err, client.ErrAuthFailed)
}

// A client certificate the front end verified authenticates the session
// by its common name (EXTERNAL), as on the native TLS port; and in-process
// sessions work on a broker with no plaintext listener.
func TestSessionCertificateIdentityOnTLSOnlyBroker(t *testing.T) {
	b, err := devcert.Generate()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, b.Write(dir, false))
	e := startSecure(t, func(c *engine.Config) {
		c.Addr, c.TLSAddr = "", "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = filepath.Join(dir, devcert.Files.Server), filepath.Join(dir, devcert.Files.ServerKey)
		c.TLSClientCAFile = filepath.Join(dir, devcert.Files.CA)
	})
	require.Nil(t, e.Addr())
	require.NoError(t, e.Security().AddUser(devcert.ClientName, "", auth.RoleUser, "unused-password"))
	_, err = e.Security().AddRule(auth.Rule{Principal: devcert.ClientName, Resource: auth.ResTopic, Name: "orders", Ops: auth.OpPublish})
	require.NoError(t, err)
	blk, _ := pem.Decode(b.Client)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)

	ctx := t.Context()
	s, release, err := e.Gateway().Acquire(ctx, "test", gateway.Credentials{Cert: cert, Remote: "192.0.2.3:1"})
	require.NoError(t, err)
	defer release()
	_, err = s.PublishBatch(ctx, "orders", []client.Message{{Value: []byte("x")}})
	require.NoError(t, err)
	_, err = s.PublishBatch(ctx, "secret", []client.Message{{Value: []byte("x")}})
	require.ErrorIs(t, err, client.ErrNotAuthorized)
}

// The gateway holds at most MaxSessions shared sessions: past it the
// least recently used idle one is closed; with none idle, a new one is
// refused with LIMIT_EXCEEDED. Idle ones close after IdleTimeout.
func TestSharedSessionBounds(t *testing.T) {
	e := startBroker(t, nil)
	g := gateway.New(gateway.Config{Broker: e, MaxSessions: 2, IdleTimeout: time.Hour})
	defer g.Close()
	ctx := t.Context()
	// Front ends share no sessions: three of them need three.
	s1, rel1, err := g.Acquire(ctx, "one", gateway.Credentials{})
	require.NoError(t, err)
	_, rel2, err := g.Acquire(ctx, "two", gateway.Credentials{})
	require.NoError(t, err)
	_, _, err = g.Acquire(ctx, "three", gateway.Credentials{})
	require.Equal(t, gateway.KindExhausted, gateway.KindOf(err), "%v", err)
	rel1()
	_, rel3, err := g.Acquire(ctx, "three", gateway.Credentials{})
	require.NoError(t, err, "the idle session made room")
	<-s1.Done()
	rel2()
	rel3()
	require.Equal(t, 2, g.Sessions())

	idle := gateway.New(gateway.Config{Broker: e, IdleTimeout: 50 * time.Millisecond})
	defer idle.Close()
	s, rel, err := idle.Acquire(ctx, "test", gateway.Credentials{})
	require.NoError(t, err)
	rel()
	<-s.Done()
	require.Eventually(t, func() bool { return idle.Sessions() == 0 }, 10*time.Second, 10*time.Millisecond)
}

// A gateway refuses sessions once the broker shuts down, with a retryable
// error.
func TestSessionsRefusedWhenShuttingDown(t *testing.T) {
	e := startBroker(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(ctx))
	_, _, err := e.Gateway().Acquire(ctx, "test", gateway.Credentials{})
	require.True(t, gateway.Retryable(err), "%v", err)
	require.Equal(t, gateway.KindUnavailable, gateway.KindOf(err))
}

// gatedBroker holds the first in-process connection back until gate is
// closed, then fails it as a dial whose deadline passed does.
type gatedBroker struct {
	*engine.Engine
	waiting chan struct{}
	gate    chan struct{}
	first   atomic.Bool
}

func (b *gatedBroker) ConnectLocal(peer server.LocalPeer) (net.Conn, error) {
	if b.first.CompareAndSwap(false, true) {
		close(b.waiting)
		<-b.gate
		return nil, context.DeadlineExceeded
	}
	return b.Engine.ConnectLocal(peer)
}

// A request waiting on a shared session another request is opening does
// not inherit that request's own failure (its deadline passed, its client
// went away): it opens the session itself.
func TestWaiterOpensWhenOpenerGivesUp(t *testing.T) {
	e := startBroker(t, nil)
	b := &gatedBroker{Engine: e, waiting: make(chan struct{}), gate: make(chan struct{})}
	g := gateway.New(gateway.Config{Broker: b})
	defer g.Close()
	opened := make(chan error, 1)
	go func() {
		_, _, err := g.Acquire(t.Context(), "test", gateway.Credentials{})
		opened <- err
	}()
	<-b.waiting
	waited := make(chan error, 1)
	go func() {
		s, release, err := g.Acquire(t.Context(), "test", gateway.Credentials{})
		if err == nil {
			_, err = s.Ping(t.Context())
			release()
		}
		waited <- err
	}()
	require.Eventually(t, func() bool { return g.Waiters() == 1 }, 10*time.Second, time.Millisecond)
	close(b.gate)
	require.ErrorIs(t, <-opened, context.DeadlineExceeded)
	require.NoError(t, <-waited)
}

// A tenant's quotas and namespace hold for its gateway sessions as for
// its native connections: its topics are its own, and its quota refuses
// what is past it.
func TestSessionTenantQuotaAndNamespace(t *testing.T) {
	e := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddTenant("acme", auth.Quotas{Topics: 1}))
	require.NoError(t, sec.AddUser("app", "acme", auth.RoleTenantAdmin, "app-password"))
	g, ctx := e.Gateway(), t.Context()
	s, release, err := g.Acquire(ctx, "test", gateway.Credentials{User: "app", Password: "app-password", Remote: "192.0.2.4:1"})
	require.NoError(t, err)
	defer release()

	require.NoError(t, s.CreateTopic(ctx, "orders", client.TopicConfig{}), "acme's orders, not the broker's")
	err = s.CreateTopic(ctx, "second", client.TopicConfig{})
	require.ErrorIs(t, err, client.ErrQuotaExceeded)
	require.Equal(t, gateway.KindExhausted, gateway.KindOf(err))
	_, err = s.PublishBatch(ctx, "orders", []client.Message{{Value: []byte("acme's")}})
	require.NoError(t, err)

	admin, releaseAdmin, err := g.Acquire(ctx, "test", gateway.Credentials{Token: adminToken, Remote: "127.0.0.1:1"})
	require.NoError(t, err)
	defer releaseAdmin()
	f, err := admin.Fetch(ctx, "orders", 0, client.Earliest)
	require.NoError(t, err)
	require.Empty(t, f.Messages, "the broker's own orders holds nothing of acme's")
}
