package engine

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/xdg-go/scram"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// startSecure runs a broker with authentication on and returns it with
// a client of the admin user (the admin token's principal).
func startSecure(t *testing.T, mutate func(*Config), opts ...Option) (*Engine, *client.Client) {
	t.Helper()
	e := startBrokerWith(t, func(c *Config) {
		c.Auth = true
		if mutate != nil {
			mutate(c)
		}
	}, opts...)
	return e, dial(t, e, client.WithToken(e.http.Token()))
}

// tryDial dials without failing the test.
func tryDial(t *testing.T, e *Engine, opts ...client.Option) (*client.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.Addr().String(), append([]client.Option{client.WithoutReconnect()}, opts...)...)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func TestAuthRefusesMissingWrongAndUnknownCredentials(t *testing.T) {
	e, _ := startSecure(t, nil)
	require.NoError(t, e.Security().AddUser("alice", "", auth.RoleUser, "correct horse"))

	_, err := tryDial(t, e)
	require.ErrorIs(t, err, client.ErrAuthFailed)
	require.ErrorContains(t, err, "authentication required")

	_, wrong := tryDial(t, e, client.WithCredentials("alice", "wrong horse"))
	require.ErrorIs(t, wrong, client.ErrAuthFailed)
	_, unknown := tryDial(t, e, client.WithCredentials("mallory", "correct horse"))
	require.ErrorIs(t, unknown, client.ErrAuthFailed)
	require.Equal(t, wrong.Error(), unknown.Error(), "a client cannot tell who exists")

	_, err = tryDial(t, e, client.WithToken("not-the-admin-token"))
	require.ErrorIs(t, err, client.ErrAuthFailed)

	c, err := tryDial(t, e, client.WithCredentials("alice", "correct horse"))
	require.NoError(t, err)
	_, err = c.Ping(testCtx(t))
	require.NoError(t, err)
}

func TestACLsDenyWithoutClosingAndApplyAtOnce(t *testing.T) {
	rec := &recorder{name: "rec"}
	e, admin := startSecure(t, nil, WithPlugin(rec))
	sec := e.Security()
	require.NoError(t, sec.AddUser("alice", "", auth.RoleUser, "correct horse"))
	ctx := testCtx(t)
	require.NoError(t, admin.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 2}))
	require.NoError(t, admin.CreateTopic(ctx, "secret", client.TopicConfig{}))

	alice := dial(t, e, client.WithCredentials("alice", "correct horse"), client.WithoutReconnect())
	for range 3 {
		_, err := alice.Publish(ctx, "orders", client.Message{Value: []byte("x")}, client.ToPartition(0))
		require.ErrorIs(t, err, client.ErrNotAuthorized)
		require.ErrorContains(t, err, `alice may not publish topic "orders"`)
	}
	_, err := alice.Ping(ctx)
	require.NoError(t, err, "a denied operation leaves the connection open")
	require.ErrorIs(t, alice.CreateTopic(ctx, "mine", client.TopicConfig{}), client.ErrNotAuthorized)
	require.ErrorIs(t, alice.DeleteTopic(ctx, "secret"), client.ErrNotAuthorized)
	_, err = alice.Subscribe(ctx, "orders", func(*client.Delivery) {})
	require.ErrorIs(t, err, client.ErrNotAuthorized)
	_, err = alice.Fetch(ctx, "secret", 0, client.Earliest)
	require.ErrorIs(t, err, client.ErrNotAuthorized)
	topics, err := alice.ListTopics(ctx)
	require.NoError(t, err)
	require.Empty(t, topics, "alice sees no topic she may not describe")

	// A rule added now applies to the open connection's next request.
	_, err = sec.AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "ord", Pattern: auth.PatternPrefix,
		Ops: auth.OpPublish | auth.OpSubscribe})
	require.NoError(t, err)
	ack, err := alice.Publish(ctx, "orders", client.Message{Value: []byte("x")}, client.ToPartition(0))
	require.NoError(t, err)
	require.EqualValues(t, 0, ack.Offset)
	f, err := alice.Fetch(ctx, "orders", 0, client.Earliest)
	require.NoError(t, err)
	require.Len(t, f.Messages, 1)
	topics, err = alice.ListTopics(ctx)
	require.NoError(t, err)
	require.Len(t, topics, 1, "publish and subscribe imply describe; secret stays hidden")
	require.Equal(t, "orders", topics[0].Name)

	// A deny added later wins over the allow.
	deny, err := sec.AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "orders", Ops: auth.OpPublish, Deny: true})
	require.NoError(t, err)
	_, err = alice.Publish(ctx, "orders", client.Message{Value: []byte("x")}, client.ToPartition(0))
	require.ErrorIs(t, err, client.ErrNotAuthorized)
	require.NoError(t, sec.DeleteRule("", false, deny.ID))
	_, err = alice.Publish(ctx, "orders", client.Message{Value: []byte("x")}, client.ToPartition(0))
	require.NoError(t, err)

	// The audit: alice's logins, the first denial of each kind at once,
	// the repeats counted when the connection closes.
	rec.waitFor(t, "alice's login", func(ev Event) bool {
		return ev.Kind == EventAuth && ev.Principal == "alice" && ev.Err == nil
	})
	first := rec.events(func(ev Event) bool {
		return ev.Kind == EventAccessDenied && ev.Target == "topic/orders" && ev.Action == "publish"
	})
	require.Len(t, first, 2, "the first denial, and the first after the deny rule came")
	require.NoError(t, alice.Close())
	rep := rec.waitFor(t, "the repeated denials", func(ev Event) bool {
		return ev.Kind == EventAccessDenied && ev.Action == "publish (repeated)"
	})
	require.Equal(t, 2, rep.Count)
	require.Equal(t, "alice", rep.Principal)
}

// A user deleted while it publishes is cut off at once, and every publish
// the broker acknowledged before is in the log.
func TestUserDeletedWhilePublishing(t *testing.T) {
	e, admin := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddUser("bob", "", auth.RoleUser, "password1"))
	_, err := sec.AddRule(auth.Rule{Principal: "bob", Resource: auth.ResTopic, Name: "feed", Ops: auth.OpPublish})
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, admin.CreateTopic(ctx, "feed", client.TopicConfig{}))

	bob := dial(t, e, client.WithCredentials("bob", "password1"))
	var acked atomic.Int64
	done := make(chan error, 1)
	go func() {
		for {
			_, err := bob.Publish(ctx, "feed", client.Message{Value: []byte("m")})
			if err != nil {
				done <- err
				return
			}
			acked.Add(1)
		}
	}()
	require.Eventually(t, func() bool { return acked.Load() >= 100 }, 30*time.Second, time.Millisecond)
	require.NoError(t, sec.DeleteUser("bob"))
	err = <-done
	<-bob.Done()
	require.ErrorIs(t, bob.Err(), client.ErrAuthFailed, "the client stops: its user is gone (%v)", err)

	f, err := admin.Fetch(ctx, "feed", 0, client.Earliest, client.MaxBytes(64<<20))
	require.NoError(t, err)
	require.GreaterOrEqual(t, f.End, acked.Load(), "every acknowledged publish is in the log")
	require.LessOrEqual(t, f.End, acked.Load()+1, "and at most the one in flight besides")

	_, err = tryDial(t, e, client.WithCredentials("bob", "password1"))
	require.ErrorIs(t, err, client.ErrAuthFailed)
}

// ACLs flip under load: each publish is either acknowledged or refused
// NOT_AUTHORIZED, never lost, and the connection survives every change.
func TestACLChangesUnderLoad(t *testing.T) {
	e, admin := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddUser("carol", "", auth.RoleUser, "password1"))
	ctx := testCtx(t)
	require.NoError(t, admin.CreateTopic(ctx, "load", client.TopicConfig{}))
	carol := dial(t, e, client.WithCredentials("carol", "password1"), client.WithoutReconnect())

	var acked, denied atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			_, err := carol.Publish(ctx, "load", client.Message{Value: []byte("m")})
			switch {
			case err == nil:
				acked.Add(1)
			case errors.Is(err, client.ErrNotAuthorized):
				denied.Add(1)
			default:
				done <- err
				return
			}
		}
	}()
	for i := range 40 {
		r, err := sec.AddRule(auth.Rule{Principal: "carol", Resource: auth.ResTopic, Name: "load", Ops: auth.OpPublish})
		require.NoError(t, err)
		want := acked.Load() + 1
		require.Eventually(t, func() bool { return acked.Load() >= want }, 30*time.Second, time.Millisecond, "round %d", i)
		require.NoError(t, sec.DeleteRule("", false, r.ID))
		wantDenied := denied.Load() + 1
		require.Eventually(t, func() bool { return denied.Load() >= wantDenied }, 30*time.Second, time.Millisecond, "round %d", i)
	}
	close(stop)
	require.NoError(t, <-done)
	f, err := admin.Fetch(ctx, "load", 0, client.Earliest, client.MaxBytes(64<<20))
	require.NoError(t, err)
	require.Equal(t, acked.Load(), f.End, "exactly the acknowledged publishes are in the log")
}

func TestAuthFailuresAreRateLimitedPerAddress(t *testing.T) {
	e, _ := startSecure(t, func(c *Config) { c.AuthFailureBurst, c.AuthFailureInterval = 3, time.Hour })
	require.NoError(t, e.Security().AddUser("dave", "", auth.RoleUser, "password1"))
	for range 3 {
		_, err := tryDial(t, e, client.WithCredentials("dave", "guess"+"work"))
		require.ErrorIs(t, err, client.ErrAuthFailed)
	}
	_, err := tryDial(t, e, client.WithCredentials("dave", "password1"))
	require.ErrorIs(t, err, client.ErrAuthFailed)
	require.ErrorContains(t, err, "too many failed authentications from this address")
}

func TestJWTAuthentication(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	keyFile := filepath.Join(t.TempDir(), "issuer.pem")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	e, admin := startSecure(t, func(c *Config) { c.JWTIssuer, c.JWTKeyFile = "https://idp.example", keyFile })
	ctx := testCtx(t)
	require.NoError(t, admin.CreateTopic(ctx, "events", client.TopicConfig{}))
	_, err = e.Security().AddRule(auth.Rule{Principal: "svc", Resource: auth.ResTopic, Name: "events", Ops: auth.OpPublish})
	require.NoError(t, err)
	tok := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(priv)
		require.NoError(t, err)
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	c, err := tryDial(t, e, client.WithToken(tok(jwt.MapClaims{"iss": "https://idp.example", "sub": "svc", "exp": exp})))
	require.NoError(t, err)
	_, err = c.Publish(ctx, "events", client.Message{Value: []byte("v")})
	require.NoError(t, err)

	// A connection ends when its token expires (the issuer's clock may be
	// 30 s behind: a token 28 s past its exp is still taken, for 2 s).
	short, err := tryDial(t, e, client.WithToken(tok(jwt.MapClaims{"iss": "https://idp.example", "sub": "svc",
		"exp": time.Now().Add(-auth.JWTLeeway + 2*time.Second).Unix()})))
	require.NoError(t, err)
	select {
	case <-short.Done():
	case <-ctx.Done():
		t.Fatal("the connection outlived its token")
	}
	require.ErrorIs(t, short.Err(), client.ErrAuthFailed)
	require.ErrorContains(t, short.Err(), "token expired")

	for name, bad := range map[string]string{
		"expired":      tok(jwt.MapClaims{"iss": "https://idp.example", "sub": "svc", "exp": time.Now().Add(-time.Hour).Unix()}),
		"wrong issuer": tok(jwt.MapClaims{"iss": "https://evil.example", "sub": "svc", "exp": exp}),
		"tampered":     strings.Replace(tok(jwt.MapClaims{"iss": "https://idp.example", "sub": "svc", "exp": exp}), ".", ".x", 1),
	} {
		_, err := tryDial(t, e, client.WithToken(bad))
		require.ErrorIs(t, err, client.ErrAuthFailed, name)
	}
}

// The exchange on the wire: what an unauthenticated connection may send,
// and a recorded SCRAM exchange replayed.
func TestAuthExchangeOnTheWire(t *testing.T) {
	e, _ := startSecure(t, nil)
	require.NoError(t, e.Security().AddUser("erin", "", auth.RoleUser, "password1"))
	hello := func(mech string, data []byte) []byte {
		return (&wire.Hello{MinVersion: wire.MinVersion, MaxVersion: wire.Version, ClientName: "raw",
			AuthMechanism: mech, AuthData: data}).Append(nil)
	}

	r := dialRaw(t, e)
	r.sendFrame(wire.TypePing, 1, nil)
	r.expectErrorThenClose(wire.CodeHandshakeRequired)

	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, hello("", nil))
	r.expectErrorThenClose(wire.CodeAuthFailed)

	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, hello("PLAIN", []byte("\x00erin\x00password1")))
	r.expectErrorThenClose(wire.CodeAuthFailed)

	r = dialRaw(t, e)
	r.sendFrame(wire.TypeAuthContinue, 1, wire.AppendAuth(nil, []byte("c=biws")))
	r.expectErrorThenClose(wire.CodeHandshakeRequired)

	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, hello(auth.MechToken, make([]byte, 70<<10)))
	r.expectErrorThenClose(wire.CodeFrameTooLarge)

	// A whole exchange, recorded.
	sc, err := scram.SHA256.NewClient("erin", "password1", "")
	require.NoError(t, err)
	conv := sc.NewConversation()
	first, err := conv.Step("")
	require.NoError(t, err)
	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, hello(auth.MechSCRAM, []byte(first)))
	f := r.next()
	require.Equal(t, wire.TypeAuthChallenge, f.Type)
	challenge, err := wire.DecodeAuth(f.Body)
	require.NoError(t, err)
	final, err := conv.Step(string(challenge))
	require.NoError(t, err)
	// Before the exchange ends only AuthContinue is taken.
	r2 := dialRaw(t, e)
	r2.sendFrame(wire.TypeHello, 1, hello(auth.MechSCRAM, []byte(first)))
	require.Equal(t, wire.TypeAuthChallenge, r2.next().Type)
	r2.sendFrame(wire.TypeListTopics, 2, nil)
	r2.expectErrorThenClose(wire.CodeHandshakeRequired)

	r.sendFrame(wire.TypeAuthContinue, 2, wire.AppendAuth(nil, []byte(final)))
	f = r.next()
	require.Equal(t, wire.TypeAuthChallenge, f.Type)
	last, err := wire.DecodeAuth(f.Body)
	require.NoError(t, err)
	_, err = conv.Step(string(last))
	require.NoError(t, err, "the broker's proof")
	require.Equal(t, wire.TypeHelloOK, r.next().Type)

	// The same messages again on a new connection: the broker's nonce
	// differs, so the recorded proof fails.
	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, hello(auth.MechSCRAM, []byte(first)))
	require.Equal(t, wire.TypeAuthChallenge, r.next().Type)
	r.sendFrame(wire.TypeAuthContinue, 2, wire.AppendAuth(nil, []byte(final)))
	r.expectErrorThenClose(wire.CodeAuthFailed)
}

func TestAnonymousBeyondLoopbackNeedsConsent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "0.0.0.0:7070"
	err := cfg.Validate()
	require.ErrorContains(t, err, "--allow-anonymous")
	cfg.Addr = ":7070"
	require.ErrorContains(t, cfg.Validate(), "--allow-anonymous")
	cfg.AllowAnonymous = true
	require.NoError(t, cfg.Validate())
	cfg.AllowAnonymous, cfg.Auth = false, true
	require.NoError(t, cfg.Validate())
	cfg.Auth = false
	for _, a := range []string{"127.0.0.1:0", "localhost:7070", "[::1]:7070", "127.0.0.2:1"} {
		cfg.Addr = a
		require.NoError(t, cfg.Validate(), a)
	}
}

// The security API: a broker admin manages tenants, users and rules; a
// tenant admin its own tenant's users and rules and nothing else; changes
// are audited and apply to open connections.
func TestSecurityAdminAPI(t *testing.T) {
	rec := &recorder{name: "rec"}
	e, _ := startSecure(t, nil, WithPlugin(rec))
	root := newAdmin(t, e)
	root.json("POST", "/api/v1/tenants", `{"name":"acme","quotas":{"topics":5}}`, 201, nil)
	root.json("POST", "/api/v1/tenants", `{"name":"globex"}`, 201, nil)
	root.fails("POST", "/api/v1/tenants", `{"name":"acme"}`, 409, "conflict", "exists")
	root.fails("POST", "/api/v1/tenants", `{"name":"../etc"}`, 400, "invalid_argument", "tenant name")
	root.json("POST", "/api/v1/users", `{"name":"ann","password":"ann-password","tenant":"acme","role":"tenant-admin"}`, 201, nil)
	root.json("POST", "/api/v1/users", `{"name":"gus","password":"gus-password","tenant":"globex"}`, 201, nil)
	root.fails("POST", "/api/v1/users", `{"name":"x","password":"short"}`, 400, "invalid_argument", "at least 8")
	root.fails("POST", "/api/v1/users", `{"name":"y","password":"long-enough","tenant":"nosuch"}`, 404, "not_found", "no such tenant")

	ann := admin{t: t, base: root.base, user: "ann", pass: "ann-password"}
	var users struct {
		Users []auth.UserView `json:"users"`
	}
	ann.json("POST", "/api/v1/users", `{"name":"abe","password":"abe-password"}`, 201, nil)
	ann.json("GET", "/api/v1/users", "", 200, &users)
	require.Len(t, users.Users, 2, "ann sees her tenant's users only")
	for _, u := range users.Users {
		require.Equal(t, "acme", u.Tenant)
	}
	ann.fails("POST", "/api/v1/users", `{"name":"eve","password":"eve-password","tenant":"globex"}`, 403, "forbidden", "not authorized")
	ann.fails("POST", "/api/v1/users", `{"name":"eve","password":"eve-password","role":"admin"}`, 403, "forbidden", "not authorized")
	ann.fails("GET", "/api/v1/users/gus", "", 404, "not_found", "no such user")
	ann.fails("DELETE", "/api/v1/users/gus", "", 404, "not_found", "no such user")
	ann.fails("POST", "/api/v1/tenants", `{"name":"mine"}`, 403, "forbidden", "not authorized")
	ann.fails("POST", "/api/v1/acls", `{"principal":"abe","resource":"cluster","name":"*","ops":"admin"}`, 403, "forbidden", "not authorized")
	ann.fails("GET", "/api/v1/topics", "", 403, "forbidden", "admin role")
	ann.fails("GET", "/metrics", "", 403, "forbidden", "admin role")
	var rule auth.Rule
	ann.json("POST", "/api/v1/acls", `{"principal":"abe","resource":"topic","name":"orders","pattern":"prefix","ops":"publish,subscribe"}`, 201, &rule)
	require.Equal(t, "acme", rule.Tenant, "a tenant admin's rule is its tenant's")
	var tenants struct {
		Tenants []auth.Tenant `json:"tenants"`
	}
	ann.json("GET", "/api/v1/tenants", "", 200, &tenants)
	require.Len(t, tenants.Tenants, 1)
	require.Equal(t, "acme", tenants.Tenants[0].Name)

	bad := admin{t: t, base: root.base, user: "ann", pass: "wrong-password"}
	bad.fails("GET", "/api/v1/users", "", 401, "unauthorized", "authentication failed")

	// Disabling a user through the API closes its connection.
	abe := dial(t, e, client.WithCredentials("abe", "abe-password"), client.WithoutReconnect())
	ann.json("PATCH", "/api/v1/users/abe", `{"disabled":true}`, 200, nil)
	<-abe.Done()
	require.ErrorIs(t, abe.Err(), client.ErrAuthFailed)
	_, err := tryDial(t, e, client.WithCredentials("abe", "abe-password"))
	require.ErrorIs(t, err, client.ErrAuthFailed)
	ann.json("PATCH", "/api/v1/users/abe", `{"disabled":false,"password":"abe-new-password"}`, 200, nil)
	_, err = tryDial(t, e, client.WithCredentials("abe", "abe-new-password"))
	require.NoError(t, err)

	ann.json("DELETE", "/api/v1/acls/"+rule.ID, "", 204, nil)
	root.fails("DELETE", "/api/v1/tenants/acme", "", 409, "conflict", "users")

	ev := rec.waitFor(t, "the audited user add", func(ev Event) bool {
		return ev.Kind == EventSecurityChanged && ev.Action == "user.add" && ev.Target == "user/abe"
	})
	require.Equal(t, "ann", ev.Principal)
	require.Equal(t, "acme", ev.Tenant)
	require.NoError(t, ev.Err)
	rec.waitFor(t, "the refused user add", func(ev Event) bool {
		return ev.Kind == EventSecurityChanged && ev.Target == "user/eve" && ev.Err != nil
	})

	info, err := os.Stat(filepath.Join(e.cfg.DataDir, auth.FileName))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	data, err := os.ReadFile(filepath.Join(e.cfg.DataDir, auth.FileName))
	require.NoError(t, err)
	require.NotContains(t, string(data), "abe-new-password")
}

// Ten thousand unauthenticated connections from one address, in waves of
// two thousand held open at once, silent or with a Hello that carries no
// credentials: the broker refuses or closes them all, holds no more than
// its per-address bound of them, and a client from another address logs
// in and publishes meanwhile.
func TestUnauthenticatedFlood(t *testing.T) {
	e, admin := startSecure(t, func(c *Config) { c.MaxHandshakesPerAddr = 64 })
	require.NoError(t, e.Security().AddUser("alice", "", auth.RoleUser, "alice-password"))
	_, err := e.Security().AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "flood", Ops: auth.OpPublish})
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, admin.CreateTopic(ctx, "flood", client.TopicConfig{}))
	hello := (&wire.Hello{MinVersion: 1, MaxVersion: wire.Version}).Append(nil)
	noCreds := append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(hello)), hello...)

	const waves, perWave, workers = 5, 2000, 16
	for wave := range waves {
		conns := make(chan net.Conn, perWave)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := net.Dialer{Timeout: 30 * time.Second}
				for i := w; i < perWave; i += workers {
					c, err := d.Dial("tcp", e.Addr().String())
					if err != nil {
						continue // the kernel's backlog overflowed: one fewer in the flood
					}
					if i%2 == 1 {
						_, _ = c.Write(noCreds)
					}
					conns <- c
				}
			}()
		}
		wg.Wait()
		close(conns)
		// Refused sockets may still be closing; what stays is bounded.
		require.Eventually(t, func() bool { return e.srv.Counters().Connections <= 64+2 }, 30*time.Second, 10*time.Millisecond,
			"wave %d: the broker holds at most its per-address bound of them", wave)

		// Another address is not held back: it logs in and publishes.
		r := rawLoginFrom(t, e, "127.0.0.2", "alice", "alice-password")
		r.send(publishFrame("flood", 0, 7, "through"))
		f := r.next()
		require.Equal(t, wire.TypePublishAck, f.Type, "wave %d", wave)
		require.NoError(t, r.c.Close())
		for c := range conns {
			_ = c.Close()
		}
	}
	require.Positive(t, e.srv.Counters().RefusedPerAddr)
	f, err := admin.Fetch(ctx, "flood", 0, client.Earliest)
	require.NoError(t, err)
	require.EqualValues(t, waves, f.End)
}

// Rules of the cluster and tenant resources give roles on the HTTP API: a
// user allowed admin on the cluster is a broker admin there, one allowed
// admin on its tenant that tenant's admin.
func TestClusterAndTenantRulesGiveAdminRoles(t *testing.T) {
	e, _ := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddTenant("acme", auth.Quotas{}))
	require.NoError(t, sec.AddUser("ops", "", auth.RoleUser, "ops-password"))
	require.NoError(t, sec.AddUser("lead", "acme", auth.RoleUser, "lead-password"))
	root := newAdmin(t, e)
	ops := admin{t: t, base: root.base, user: "ops", pass: "ops-password"}
	lead := admin{t: t, base: root.base, user: "lead", pass: "lead-password"}
	ops.fails("GET", "/api/v1/topics", "", 403, "forbidden", "admin role")
	lead.fails("GET", "/api/v1/users", "", 403, "forbidden", "admin role")

	_, err := sec.AddRule(auth.Rule{Principal: "ops", Resource: auth.ResCluster, Name: "*", Ops: auth.OpAdmin})
	require.NoError(t, err)
	_, err = sec.AddRule(auth.Rule{Tenant: "acme", Principal: "lead", Resource: auth.ResTenant, Name: "acme", Ops: auth.OpAdmin})
	require.NoError(t, err)
	ops.json("GET", "/api/v1/topics", "", 200, nil)
	var users struct {
		Users []auth.UserView `json:"users"`
	}
	lead.json("GET", "/api/v1/users", "", 200, &users)
	for _, u := range users.Users {
		require.Equal(t, "acme", u.Tenant, "a tenant admin by rule sees its tenant only")
	}
	lead.fails("GET", "/api/v1/topics", "", 403, "forbidden", "admin role")
}
