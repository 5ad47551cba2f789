package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/xdg-go/scram"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// nextError reads the next frame, checks it is an Error of code and
// returns its message.
func (r *rawConn) nextError(code wire.Code) string {
	r.t.Helper()
	f := r.next()
	require.Equal(r.t, wire.TypeError, f.Type)
	e, err := wire.DecodeError(f.Body)
	require.NoError(r.t, err)
	require.Equal(r.t, code, e.Code, "%v", e)
	return e.Message
}

// A principal of no tenant, even one allowed everything in the broker's
// namespace, cannot name a tenant's topic or group by its qualified name.
func TestNoTenantCannotReachTenants(t *testing.T) {
	e, acme, _ := twoTenants(t)
	ctx := testCtx(t)
	require.NoError(t, acme.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	_, err := acme.Publish(ctx, "orders", client.Message{Value: []byte("acme-secret")})
	require.NoError(t, err)
	sec := e.Security()
	require.NoError(t, sec.AddUser("ops", "", auth.RoleUser, "ops-password"))
	for _, res := range []auth.Resource{auth.ResTopic, auth.ResGroup} {
		_, err = sec.AddRule(auth.Rule{Principal: "ops", Resource: res, Name: "*", Ops: auth.OpAll})
		require.NoError(t, err)
	}

	r := rawLogin(t, e, "ops", "ops-password")
	r.sendFrame(wire.TypeFetch, 10, (&wire.Fetch{Topic: "acme~orders", Start: wire.Start{Kind: wire.StartEarliest}, MaxBytes: 1 << 20}).Append(nil))
	r.nextError(wire.CodeUnknownTopic)
	r.sendFrame(wire.TypeDescribeTopic, 11, wire.AppendName(nil, "acme~orders"))
	r.nextError(wire.CodeUnknownTopic)
	r.sendFrame(wire.TypeDescribeTopic, 12, wire.AppendName(nil, "acme~orders"))
	r.nextError(wire.CodeUnknownTopic)
	r.sendFrame(wire.TypeCreateTopic, 13, (&wire.CreateTopic{Name: "acme~planted", Partitions: 1}).Append(nil))
	r.nextError(wire.CodeInvalidArgument)
	r.sendFrame(wire.TypeDeleteTopic, 14, wire.AppendName(nil, "acme~orders"))
	r.nextError(wire.CodeInvalidArgument)
	r.sendFrame(wire.TypeDescribeGroup, 15, wire.AppendName(nil, "acme~workers"))
	r.nextError(wire.CodeInvalidArgument)
	r.send(publishFrame("acme~orders", 0, 16, "planted"))
	r.nextError(wire.CodeInvalidArgument)
	r.sendFrame(wire.TypeCreateTopic, 17, (&wire.CreateTopic{Name: "mine", Partitions: 1,
		Config: []wire.KV{{Key: "dead-letter-topic", Value: "acme~orders"}}}).Append(nil))
	r.nextError(wire.CodeInvalidArgument)

	list, err := acme.ListTopics(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1, "nothing was planted in acme")
	f, err := acme.Fetch(ctx, "orders", 0, client.Earliest)
	require.NoError(t, err)
	require.Len(t, f.Messages, 1)
}

// A tenant cannot make another tenant's topic its dead-letter topic, and
// a dead-letter topic must be one the principal may publish to.
func TestDeadLetterTopicsStayInTheirTenant(t *testing.T) {
	e, acme, _ := twoTenants(t)
	ctx := testCtx(t)
	require.NoError(t, acme.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	r := rawLogin(t, e, "globex-app", "globex-password")
	r.sendFrame(wire.TypeCreateTopic, 10, (&wire.CreateTopic{Name: "jobs", Partitions: 1,
		Config: []wire.KV{{Key: "dead-letter-topic", Value: "acme~orders"}}}).Append(nil))
	r.nextError(wire.CodeInvalidArgument)

	sec := e.Security()
	require.NoError(t, sec.AddTenant("initech", auth.Quotas{}))
	require.NoError(t, sec.AddUser("worker", "initech", auth.RoleUser, "worker-password"))
	for _, rule := range []auth.Rule{
		{Tenant: "initech", Principal: "worker", Resource: auth.ResTopic, Name: "jobs", Ops: auth.OpAll},
		{Tenant: "initech", Principal: "worker", Resource: auth.ResTopic, Name: "audit", Ops: auth.OpSubscribe},
	} {
		_, err := sec.AddRule(rule)
		require.NoError(t, err)
	}
	w := rawLogin(t, e, "worker", "worker-password")
	w.sendFrame(wire.TypeCreateTopic, 11, (&wire.CreateTopic{Name: "jobs", Partitions: 1,
		Config: []wire.KV{{Key: "dead-letter-topic", Value: "audit"}}}).Append(nil))
	require.Contains(t, w.nextError(wire.CodeNotAuthorized), `may not publish topic "audit"`)
}

// The admin token's name cannot be taken by a user, so no user change
// reaches the admin token's connections.
func TestAdminNameIsReserved(t *testing.T) {
	e, adminConn := startSecure(t, nil)
	root := newAdmin(t, e)
	root.json("POST", "/api/v1/tenants", `{"name":"acme"}`, 201, nil)
	root.json("POST", "/api/v1/users", `{"name":"ann","password":"ann-password","tenant":"acme","role":"tenant-admin"}`, 201, nil)
	ann := admin{t: t, base: root.base, user: "ann", pass: "ann-password"}
	ann.fails("POST", "/api/v1/users", `{"name":"admin","password":"whatever-pass"}`, 400, "invalid_argument", "admin token")
	_, err := adminConn.Ping(testCtx(t))
	require.NoError(t, err)
}

// A SCRAM login under way when its user's password changes fails: its
// proof was made with keys that are no longer the user's.
func TestLoginRacingAPasswordChangeFails(t *testing.T) {
	e, _ := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddUser("bob", "", auth.RoleUser, "old-password"))
	sc, err := scram.SHA256.NewClient("bob", "old-password", "")
	require.NoError(t, err)
	conv := sc.NewConversation()
	first, err := conv.Step("")
	require.NoError(t, err)
	r := dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: wire.MinVersion, MaxVersion: wire.Version, ClientName: "raw",
		AuthMechanism: auth.MechSCRAM, AuthData: []byte(first)}).Append(nil))
	f := r.next()
	require.Equal(t, wire.TypeAuthChallenge, f.Type)
	ch, err := wire.DecodeAuth(f.Body)
	require.NoError(t, err)
	final, err := conv.Step(string(ch))
	require.NoError(t, err)

	require.NoError(t, sec.SetPassword("bob", "new-password"))

	r.sendFrame(wire.TypeAuthContinue, 2, wire.AppendAuth(nil, []byte(final)))
	for {
		f := r.next()
		if f.Type == wire.TypeAuthChallenge {
			continue // the proof matched the keys read at Hello; the login is refused after it
		}
		require.Equal(t, wire.TypeError, f.Type, "no HelloOK")
		e, err := wire.DecodeError(f.Body)
		require.NoError(t, err)
		require.Equal(t, wire.CodeAuthFailed, e.Code)
		break
	}
	r.expectClosed()
}

// A subscription whose rule is withdrawn ends: its connection gets
// NOT_AUTHORIZED and is closed, and nothing published after the change
// reaches it.
func TestRevokedRuleEndsSubscriptions(t *testing.T) {
	e, admin := startSecure(t, nil)
	sec := e.Security()
	ctx := testCtx(t)
	require.NoError(t, sec.AddUser("sue", "", auth.RoleUser, "sue-password"))
	rule, err := sec.AddRule(auth.Rule{Principal: "sue", Resource: auth.ResTopic, Name: "news", Ops: auth.OpSubscribe})
	require.NoError(t, err)
	require.NoError(t, admin.CreateTopic(ctx, "news", client.TopicConfig{}))
	sue := dial(t, e, client.WithCredentials("sue", "sue-password"), client.WithoutReconnect())
	got := make(chan client.Delivery, 16)
	_, err = sue.Subscribe(ctx, "news", func(d *client.Delivery) { got <- *d })
	require.NoError(t, err)
	require.NoError(t, sec.DeleteRule("", false, rule.ID))
	select {
	case <-sue.Done():
	case <-ctx.Done():
		t.Fatal("the subscription outlived its rule")
	}
	require.ErrorIs(t, sue.Err(), client.ErrNotAuthorized)
	_, err = admin.Publish(ctx, "news", client.Message{Value: []byte("after")})
	require.NoError(t, err)
	select {
	case d := <-got:
		t.Fatalf("delivered after the rule went: %q", d.Value)
	default:
	}
}

// Names in a tenant's error messages are its own.
func TestTenantErrorsNameTheTenantsNames(t *testing.T) {
	_, acme, _ := twoTenants(t)
	ctx := testCtx(t)
	require.NoError(t, acme.CreateTopic(ctx, "orders", client.TopicConfig{}))
	err := acme.CreateTopic(ctx, "orders", client.TopicConfig{})
	require.ErrorIs(t, err, client.ErrTopicExists)
	require.NotContains(t, err.Error(), "acme~")
	require.Contains(t, err.Error(), "orders")
}

// One batch far over a tiny publish rate holds its connection for a
// bounded time, and raising the quota lets the tenant go at once.
func TestThrottleIsBoundedAndReleasedByAQuotaRaise(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{PublishBytesPerSec: 1024})
	c, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "t", client.TopicConfig{Storage: "memory"}))
	_, err = c.Publish(ctx, "t", client.Message{Value: make([]byte, 256<<10)}) // 256 s of debt at 1 KiB/s
	require.NoError(t, err)
	require.NoError(t, e.Security().SetQuotas("acme", auth.Quotas{PublishBytesPerSec: 100 << 20}))
	_, err = c.Ping(ctx)
	require.NoError(t, err, "the connection is let go")
	c2, err := acmeDial(t, e)
	require.NoError(t, err)
	_, err = c2.Publish(ctx, "t", client.Message{Value: []byte("x")})
	require.NoError(t, err)
	_, err = c2.Ping(ctx)
	require.NoError(t, err, "the tenant's debt was forgiven with the old rate")
}
