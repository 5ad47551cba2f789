package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/xdg-go/scram"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// twoTenants starts a secure broker with tenants acme and globex, each
// with a user that may do anything within it.
func twoTenants(t *testing.T) (*Engine, *client.Client, *client.Client) {
	t.Helper()
	e, _ := startSecure(t, nil)
	sec := e.Security()
	for _, tn := range []string{"acme", "globex"} {
		require.NoError(t, sec.AddTenant(tn, auth.Quotas{}))
		require.NoError(t, sec.AddUser(tn+"-app", tn, auth.RoleUser, tn+"-password"))
		_, err := sec.AddRule(auth.Rule{Tenant: tn, Principal: "*", Resource: auth.ResTopic, Name: "*", Ops: auth.OpAll})
		require.NoError(t, err)
		_, err = sec.AddRule(auth.Rule{Tenant: tn, Principal: "*", Resource: auth.ResGroup, Name: "*", Ops: auth.OpAll})
		require.NoError(t, err)
	}
	acme := dial(t, e, client.WithCredentials("acme-app", "acme-password"))
	globex := dial(t, e, client.WithCredentials("globex-app", "globex-password"))
	return e, acme, globex
}

// Tenant A's orders is not tenant B's orders: each publishes, lists,
// describes, fetches, subscribes and consumes in a group its own.
func TestTenantsAreIsolatedNamespaces(t *testing.T) {
	e, acme, globex := twoTenants(t)
	ctx := testCtx(t)
	for c, who := range map[*client.Client]string{acme: "acme", globex: "globex"} {
		require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
		for i := range 3 {
			_, err := c.Publish(ctx, "orders", client.Message{Value: []byte(who + "-" + string(rune('0'+i)))})
			require.NoError(t, err)
		}
	}
	for c, who := range map[*client.Client]string{acme: "acme", globex: "globex"} {
		topics, err := c.ListTopics(ctx)
		require.NoError(t, err)
		require.Len(t, topics, 1, who)
		require.Equal(t, "orders", topics[0].Name, "the tenant's name, unqualified")
		info, err := c.DescribeTopic(ctx, "orders")
		require.NoError(t, err)
		require.Equal(t, "orders", info.Name)
		f, err := c.Fetch(ctx, "orders", 0, client.Earliest)
		require.NoError(t, err)
		require.Len(t, f.Messages, 3)
		for _, m := range f.Messages {
			require.True(t, strings.HasPrefix(string(m.Value), who+"-"), "%s read %q", who, m.Value)
			require.Equal(t, "orders", m.Topic)
		}
		// A subscription from the start replays the log: its deliveries
		// name the topic as the tenant does.
		got := make(chan client.Delivery, 16)
		sub, err := c.Subscribe(ctx, "orders", func(d *client.Delivery) { got <- *d }, client.StartAt(client.Earliest))
		require.NoError(t, err)
		for range 3 {
			d := recv(t, ctx, got)
			require.Equal(t, "orders", d.Topic)
			require.True(t, strings.HasPrefix(string(d.Value), who+"-"))
		}
		require.NoError(t, sub.Unsubscribe(ctx))
	}

	// Groups: the same group name in both tenants is two groups.
	for _, who := range []string{"acme", "globex"} {
		got := make(chan client.GroupMessage, 16)
		gc, err := client.JoinGroup(ctx, e.Addr().String(), client.GroupConfig{Group: "workers", Topic: "orders",
			Start: client.Earliest, Handler: func(m *client.GroupMessage) error { got <- *m; return nil }},
			client.WithCredentials(who+"-app", who+"-password"))
		require.NoError(t, err)
		for range 3 {
			m := recv(t, ctx, got)
			require.True(t, strings.HasPrefix(string(m.Value), who+"-"))
			require.Equal(t, "orders", m.Topic)
		}
		require.NoError(t, gc.Close())
	}
	for c := range map[*client.Client]bool{acme: true, globex: true} {
		groups, err := c.ListGroups(ctx)
		require.NoError(t, err)
		require.Len(t, groups, 1)
		require.Equal(t, "workers", groups[0].Group)
		require.Equal(t, "orders", groups[0].Topic)
		info, err := c.DescribeGroup(ctx, "workers")
		require.NoError(t, err)
		require.Equal(t, "orders", info.Topic)
	}

	// On disk each has a directory of its own, under the broker's topics.
	for _, tn := range []string{"acme", "globex"} {
		_, err := os.Stat(filepath.Join(e.cfg.DataDir, "topics", tn+"~orders"))
		require.NoError(t, err)
	}

	// Deleting one tenant's topic leaves the other's.
	require.NoError(t, acme.DeleteTopic(ctx, "orders"))
	f, err := globex.Fetch(ctx, "orders", 0, client.Earliest)
	require.NoError(t, err)
	require.Len(t, f.Messages, 3)
}

// recv takes the next value of ch, failing the test when ctx ends first.
func recv[T any](t *testing.T, ctx context.Context, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal("nothing arrived")
	}
	var zero T
	return zero
}

// rawLogin authenticates a raw connection by SCRAM.
func rawLogin(t *testing.T, e *Engine, user, pass string) *rawConn {
	t.Helper()
	return rawLoginFrom(t, e, "127.0.0.1", user, pass)
}

// rawLoginFrom is rawLogin from a given source address.
func rawLoginFrom(t *testing.T, e *Engine, src, user, pass string) *rawConn {
	t.Helper()
	sc, err := scram.SHA256.NewClient(user, pass, "")
	require.NoError(t, err)
	conv := sc.NewConversation()
	first, err := conv.Step("")
	require.NoError(t, err)
	r := dialRawFrom(t, e, src)
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: wire.MinVersion, MaxVersion: wire.Version, ClientName: "raw",
		AuthMechanism: auth.MechSCRAM, AuthData: []byte(first)}).Append(nil))
	f := r.next()
	require.Equal(t, wire.TypeAuthChallenge, f.Type)
	ch, err := wire.DecodeAuth(f.Body)
	require.NoError(t, err)
	final, err := conv.Step(string(ch))
	require.NoError(t, err)
	r.sendFrame(wire.TypeAuthContinue, 2, wire.AppendAuth(nil, []byte(final)))
	require.Equal(t, wire.TypeAuthChallenge, r.next().Type)
	require.Equal(t, wire.TypeHelloOK, r.next().Type)
	return r
}

// No name on the wire reaches another tenant's topic or group: qualified
// names, paths, NUL, very long and Unicode names are refused, and the
// connection stays.
func TestTenantNamesCannotEscape(t *testing.T) {
	e, acme, _ := twoTenants(t)
	ctx := testCtx(t)
	require.NoError(t, acme.CreateTopic(ctx, "orders", client.TopicConfig{}))
	_, err := acme.Publish(ctx, "orders", client.Message{Value: []byte("secret")})
	require.NoError(t, err)

	r := rawLogin(t, e, "globex-app", "globex-password")
	long := strings.Repeat("x", 249-len("globex~")+1) // valid alone, too long with the tenant
	names := []string{"acme~orders", "~orders", "../acme~orders", "acme/orders", "/etc/passwd", "orders\x00",
		"ordérs", "🐿", "..", ".", "", strings.Repeat("y", 300), long}
	corr := uint32(10)
	for _, n := range names {
		corr++
		r.sendFrame(wire.TypeDescribeTopic, corr, wire.AppendName(nil, n))
		f := r.next()
		require.Equal(t, wire.TypeError, f.Type, "describe %q", n)
		e, derr := wire.DecodeError(f.Body)
		require.NoError(t, derr)
		require.Contains(t, []wire.Code{wire.CodeUnknownTopic, wire.CodeInvalidArgument}, e.Code, "describe %q: %v", n, e)

		corr++
		r.sendFrame(wire.TypeFetch, corr, (&wire.Fetch{Topic: n, Start: wire.Start{Kind: wire.StartEarliest}, MaxBytes: 1 << 20}).Append(nil))
		f = r.next()
		require.Equal(t, wire.TypeError, f.Type, "fetch %q", n)

		corr++
		r.sendFrame(wire.TypeCreateTopic, corr, (&wire.CreateTopic{Name: n, Partitions: 1}).Append(nil))
		f = r.next()
		if n == long {
			require.Equal(t, wire.TypeError, f.Type, "create %q", n)
			e, _ := wire.DecodeError(f.Body)
			require.Equal(t, wire.CodeInvalidArgument, e.Code)
			require.Contains(t, e.Message, "too long for its tenant")
			continue
		}
		require.Equal(t, wire.TypeError, f.Type, "create %q", n)
	}
	// Still serving: the connection lists its (empty) namespace.
	r.sendFrame(wire.TypeListTopics, 99, nil)
	f := r.next()
	require.Equal(t, wire.TypeTopicList, f.Type)
	list, err := wire.DecodeTopicList(f.Body)
	require.NoError(t, err)
	require.Empty(t, list, "globex sees nothing of acme")

	// acme's topic holds only what acme wrote.
	fr, err := acme.Fetch(ctx, "orders", 0, client.Earliest)
	require.NoError(t, err)
	require.Len(t, fr.Messages, 1)
}
