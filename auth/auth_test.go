package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/xdg-go/scram"
	"pgregory.net/rapid"
)

func readFileForTest(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(nil, dir)
	require.NoError(t, err)
	return s, dir
}

// scramLogin runs a whole SCRAM-SHA-256 exchange between the library's
// client and the broker's side.
func scramLogin(t *testing.T, a *Authenticator, user, pass string) (*Principal, error) {
	t.Helper()
	c, err := scram.SHA256.NewClient(user, pass, "")
	require.NoError(t, err)
	cc := c.NewConversation()
	sc := a.NewScram()
	first, err := cc.Step("")
	require.NoError(t, err)
	challenge, done, _, err := sc.Step([]byte(first))
	if done {
		return nil, err
	}
	final, err := cc.Step(string(challenge))
	require.NoError(t, err)
	last, done, p, err := sc.Step([]byte(final))
	require.True(t, done)
	if err != nil {
		return nil, err
	}
	_, err = cc.Step(string(last)) // the client checks the broker's proof
	require.NoError(t, err, "the broker proves it knows the user's keys")
	require.True(t, cc.Valid())
	return p, nil
}

func TestScramLogsInAndRefusesWrongOrUnknown(t *testing.T) {
	s, _ := newStore(t)
	a := &Authenticator{Store: s}
	require.NoError(t, s.AddTenant("acme", Quotas{}))
	require.NoError(t, s.AddUser("alice", "acme", RoleUser, "correct horse"))

	p, err := scramLogin(t, a, "alice", "correct horse")
	require.NoError(t, err)
	require.Equal(t, Principal{User: "alice", Tenant: "acme", Role: RoleUser, Mechanism: MechSCRAM}, *p)

	_, wrong := scramLogin(t, a, "alice", "wrong horse")
	require.ErrorIs(t, wrong, ErrBadCredentials)
	_, unknown := scramLogin(t, a, "mallory", "correct horse")
	require.ErrorIs(t, unknown, ErrBadCredentials)
	require.Equal(t, wrong.Error(), unknown.Error(), "the answer does not tell who exists")

	require.NoError(t, s.SetDisabled("alice", true))
	_, err = scramLogin(t, a, "alice", "correct horse")
	require.ErrorIs(t, err, ErrBadCredentials, "a disabled user cannot log in")
	require.NoError(t, s.SetDisabled("alice", false))
	require.NoError(t, s.SetPassword("alice", "battery staple"))
	_, err = scramLogin(t, a, "alice", "correct horse")
	require.ErrorIs(t, err, ErrBadCredentials, "the old password is gone")
	_, err = scramLogin(t, a, "alice", "battery staple")
	require.NoError(t, err)
}

// A recorded exchange replayed on a new conversation fails: the broker's
// nonce differs, so the recorded proof does not match.
func TestScramReplayIsRefused(t *testing.T) {
	s, _ := newStore(t)
	a := &Authenticator{Store: s}
	require.NoError(t, s.AddUser("bob", "", RoleUser, "password1"))
	c, _ := scram.SHA256.NewClient("bob", "password1", "")
	cc := c.NewConversation()
	sc := a.NewScram()
	first, _ := cc.Step("")
	ch, _, _, err := sc.Step([]byte(first))
	require.NoError(t, err)
	final, _ := cc.Step(string(ch))
	_, _, p, err := sc.Step([]byte(final))
	require.NoError(t, err)
	require.Equal(t, "bob", p.User)

	replay := a.NewScram()
	_, done, _, err := replay.Step([]byte(first))
	require.NoError(t, err)
	require.False(t, done)
	_, done, p, err = replay.Step([]byte(final))
	require.True(t, done)
	require.Nil(t, p)
	require.ErrorIs(t, err, ErrBadCredentials)
}

func TestStoreKeepsNoPasswordsAndReloads(t *testing.T) {
	s, dir := newStore(t)
	require.NoError(t, s.AddTenant("acme", Quotas{Topics: 3}))
	require.NoError(t, s.AddUser("carol", "acme", RoleTenantAdmin, "hunter2hunter2"))
	r, err := s.AddRule(Rule{Tenant: "acme", Principal: "*", Resource: ResTopic, Name: "orders", Ops: OpPublish})
	require.NoError(t, err)
	data, err := readFileForTest(dir + "/" + FileName)
	require.NoError(t, err)
	require.NotContains(t, data, "hunter2", "no password at rest")
	require.Contains(t, data, "stored_key")

	s2, err := Open(nil, dir)
	require.NoError(t, err)
	u, ok := s2.User("carol")
	require.True(t, ok)
	require.Equal(t, RoleTenantAdmin, u.Role)
	require.Equal(t, []Rule{r}, s2.Rules("acme", false))
	tn, ok := s2.Tenant("acme")
	require.True(t, ok)
	require.EqualValues(t, 3, tn.Quotas.Topics)
	_, err = scramLogin(t, &Authenticator{Store: s2}, "carol", "hunter2hunter2")
	require.NoError(t, err)
	p, err := (&Authenticator{Store: s2}).Password("carol", "hunter2hunter2")
	require.NoError(t, err)
	require.Equal(t, "carol", p.User)
	_, err = (&Authenticator{Store: s2}).Password("carol", "hunter3hunter3")
	require.ErrorIs(t, err, ErrBadCredentials)
}

func TestStoreRefusesBadInput(t *testing.T) {
	s, _ := newStore(t)
	require.Error(t, s.AddUser("", "", RoleUser, "password1"))
	require.Error(t, s.AddUser("../x", "", RoleUser, "password1"))
	require.Error(t, s.AddUser("x\x00", "", RoleUser, "password1"))
	require.Error(t, s.AddUser("ok", "", RoleUser, "short"))
	require.ErrorIs(t, s.AddUser("ok", "nosuch", RoleUser, "password1"), ErrUnknownTenant)
	require.Error(t, s.AddUser("ok", "", RoleTenantAdmin, "password1"), "a tenant admin needs a tenant")
	require.Error(t, s.AddTenant("Acme/", Quotas{}))
	require.Error(t, s.AddTenant("a~b", Quotas{}))
	require.NoError(t, s.AddUser("ok", "", RoleUser, "password1"))
	require.ErrorIs(t, s.AddUser("ok", "", RoleUser, "password1"), ErrUserExists)
	require.ErrorIs(t, s.DeleteUser("nosuch"), ErrUnknownUser)
	_, err := s.AddRule(Rule{Principal: "ok", Resource: "disk", Name: "x", Ops: OpPublish})
	require.Error(t, err)
	_, err = s.AddRule(Rule{Principal: "ok", Resource: ResTopic, Name: "x"})
	require.Error(t, err)
	require.ErrorIs(t, s.DeleteRule("", true, "nosuch"), ErrUnknownRule)
}

func TestRevokeCallbacks(t *testing.T) {
	s, _ := newStore(t)
	var got []string
	changes := 0
	s.OnRevoke(func(u, tenant string) { got = append(got, tenant+"/"+u) })
	s.OnChange(func() { changes++ })
	require.NoError(t, s.AddUser("dave", "", RoleUser, "password1"))
	require.NoError(t, s.SetPassword("dave", "password2"))
	require.NoError(t, s.SetDisabled("dave", true))
	require.NoError(t, s.SetDisabled("dave", false))
	require.NoError(t, s.DeleteUser("dave"))
	require.Equal(t, []string{"/dave", "/dave", "/dave"}, got, "password change, disable and delete revoke; enable does not")
	require.Equal(t, 5, changes)
	require.Error(t, s.AddUser("admin", "", RoleUser, "password1"), "the admin token's name is reserved")
}

func TestAuthorizeDenyWinsPrefixAndTenants(t *testing.T) {
	s, _ := newStore(t)
	require.NoError(t, s.AddTenant("acme", Quotas{}))
	gen := s.Gen()
	add := func(r Rule) {
		_, err := s.AddRule(r)
		require.NoError(t, err)
	}
	add(Rule{Principal: "alice", Resource: ResTopic, Name: "orders.", Pattern: PatternPrefix, Ops: OpPublish | OpSubscribe})
	add(Rule{Principal: "alice", Resource: ResTopic, Name: "orders.secret", Ops: OpSubscribe, Deny: true})
	add(Rule{Principal: "*", Resource: ResTopic, Name: "*", Ops: OpDescribe})
	add(Rule{Tenant: "acme", Principal: "alice", Resource: ResTopic, Name: "*", Ops: OpAll})
	require.Greater(t, s.Gen(), gen, "a rule change moves the generation")

	alice := &Principal{User: "alice"}
	require.True(t, s.Authorize(alice, ResTopic, "orders.eu", OpPublish))
	require.True(t, s.Authorize(alice, ResTopic, "orders.secret", OpPublish))
	require.False(t, s.Authorize(alice, ResTopic, "orders.secret", OpSubscribe), "deny wins")
	require.False(t, s.Authorize(alice, ResTopic, "billing", OpPublish), "no rule, no access")
	require.True(t, s.Authorize(alice, ResTopic, "billing", OpDescribe), "* principal")
	require.False(t, s.Authorize(alice, ResGroup, "orders.eu", OpJoin), "resource types differ")
	require.False(t, s.Authorize(alice, ResTopic, "orders.eu", OpDelete))
	require.True(t, s.Authorize(&Principal{User: "zed"}, ResTopic, "x", OpDescribe), "the * describe rule")
	add(Rule{Principal: "bob", Resource: ResTopic, Name: "audit", Ops: OpPublish})
	require.True(t, s.Authorize(&Principal{User: "bob"}, ResTopic, "audit", OpDescribe), "publish implies describe")
	require.False(t, s.Authorize(&Principal{User: "bob"}, ResTopic, "audit", OpSubscribe))

	acmeAlice := &Principal{User: "alice", Tenant: "acme"}
	require.True(t, s.Authorize(acmeAlice, ResTopic, "billing", OpDelete), "the tenant's own rules")
	require.False(t, s.Authorize(&Principal{User: "bob", Tenant: "acme"}, ResTopic, "orders.eu", OpPublish),
		"the default namespace's rules do not reach a tenant")
	require.True(t, s.Authorize(&Principal{User: "x", Role: RoleAdmin}, ResCluster, "*", OpAdmin))
	ta := &Principal{User: "t", Tenant: "acme", Role: RoleTenantAdmin}
	require.True(t, s.Authorize(ta, ResTenant, "acme", OpAdmin))
	require.False(t, s.Authorize(ta, ResCluster, "*", OpAdmin), "a tenant admin is no broker admin")
}

// Deny wins whatever the order of the rules: a property over random rule
// sets.
func TestDecideDenyWinsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := []string{"a", "ab", "b", "*"}
		n := rapid.IntRange(0, 6).Draw(t, "n")
		var rules []Rule
		for i := range n {
			rules = append(rules, Rule{
				Principal: rapid.SampledFrom([]string{"u", "v", "*"}).Draw(t, "p"),
				Resource:  ResTopic,
				Name:      rapid.SampledFrom(names).Draw(t, "name"),
				Pattern:   rapid.SampledFrom([]Pattern{PatternLiteral, PatternPrefix}).Draw(t, "pat"),
				Ops:       Op(rapid.IntRange(1, int(OpAll)).Draw(t, "ops")),
				Deny:      rapid.Bool().Draw(t, "deny"),
				ID:        string(rune('a' + i)),
			})
		}
		name := rapid.SampledFrom([]string{"a", "ab", "abc", "b"}).Draw(t, "target")
		op := Op(1) << rapid.IntRange(0, 7).Draw(t, "op")
		got := decide(rules, "", "u", ResTopic, name, op)
		var allow, deny bool
		for i := range rules {
			if rules[i].matches("u", ResTopic, name, op) {
				allow = allow || !rules[i].Deny
				deny = deny || rules[i].Deny
			}
		}
		if got != (allow && !deny) {
			t.Fatalf("decide = %v, allow %v deny %v", got, allow, deny)
		}
		reversed := append([]Rule(nil), rules...)
		for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
			reversed[i], reversed[j] = reversed[j], reversed[i]
		}
		if decide(reversed, "", "u", ResTopic, name, op) != got {
			t.Fatalf("the order of the rules changed the decision")
		}
	})
}

func TestParseOps(t *testing.T) {
	o, err := ParseOps("publish, fetch,join")
	require.NoError(t, err)
	require.Equal(t, OpPublish|OpSubscribe|OpJoin, o)
	require.Equal(t, "publish,subscribe,join", o.String())
	all, err := ParseOps("all")
	require.NoError(t, err)
	require.Equal(t, OpAll, all)
	_, err = ParseOps("explode")
	require.ErrorContains(t, err, "unknown operation")
	_, err = ParseOps("")
	require.Error(t, err)
}

func signed(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	require.NoError(t, err)
	return s
}

func TestJWT(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	v, err := NewJWTVerifierKey("idp", pub)
	require.NoError(t, err)
	s, _ := newStore(t)
	a := &Authenticator{Store: s, JWT: v, AdminToken: func() string { return "the-admin-token" }}
	exp := time.Now().Add(time.Hour).Unix()

	_, err = a.Token(signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "tenant": "acme", "exp": exp}))
	require.ErrorContains(t, err, "does not exist", "a token's tenant must exist")
	require.NoError(t, s.AddTenant("acme", Quotas{}))

	p, err := a.Token(signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "tenant": "acme", "exp": exp}))
	require.NoError(t, err)
	require.Equal(t, time.Unix(exp, 0), p.Expires)
	p.Expires = time.Time{}
	require.Equal(t, Principal{User: "erin", Tenant: "acme", Role: RoleUser, Mechanism: MechToken}, *p)

	p, err = a.Token("the-admin-token")
	require.NoError(t, err)
	require.Equal(t, RoleAdmin, p.Role, "the admin token is the admin user's credential")

	bad := map[string]string{
		"expired":      signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "exp": time.Now().Add(-time.Hour).Unix()}),
		"wrong issuer": signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "other", "sub": "erin", "exp": exp}),
		"no expiry":    signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin"}),
		"bad subject":  signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "../root", "exp": exp}),
		"bad tenant":   signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "tenant": "a/b", "exp": exp}),
		"admin role":   signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "role": "admin", "exp": exp}),
		"HS256 with the public key as secret": signed(t, jwt.SigningMethodHS256, []byte(pub),
			jwt.MapClaims{"iss": "idp", "sub": "erin", "exp": exp}),
		"garbage": "a.b.c",
		"empty":   "",
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	bad["another key"] = signed(t, jwt.SigningMethodEdDSA, other, jwt.MapClaims{"iss": "idp", "sub": "erin", "exp": exp})
	good := signed(t, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"iss": "idp", "sub": "erin", "exp": exp})
	parts := strings.Split(good, ".")
	bad["tampered claims"] = parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]
	bad["none alg"] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + "."
	for name, tok := range bad {
		p, err := a.Token(tok)
		require.Error(t, err, name)
		require.Nil(t, p, name)
		require.Contains(t, err.Error(), "authentication failed", name)
	}

	// A token cannot speak for a disabled user.
	require.NoError(t, s.AddUser("erin", "", RoleUser, "password1"))
	require.NoError(t, s.SetDisabled("erin", true))
	_, err = a.Token(good)
	require.ErrorIs(t, err, ErrBadCredentials)

	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rv, err := NewJWTVerifierKey("idp", &rk.PublicKey)
	require.NoError(t, err)
	p, err = rv.Verify(signed(t, jwt.SigningMethodRS256, rk, jwt.MapClaims{"iss": "idp", "sub": "frank", "exp": exp}))
	require.NoError(t, err)
	require.Equal(t, "frank", p.User)
}

func TestExternal(t *testing.T) {
	s, _ := newStore(t)
	a := &Authenticator{Store: s}
	require.NoError(t, s.AddTenant("acme", Quotas{}))
	require.NoError(t, s.AddUser("svc-orders", "acme", RoleUser, "password1"))
	p, err := a.External("svc-orders")
	require.NoError(t, err)
	require.Equal(t, Principal{User: "svc-orders", Tenant: "acme", Role: RoleUser, Mechanism: MechExternal}, *p)
	p, err = a.External("ci-runner")
	require.NoError(t, err)
	require.Equal(t, "", p.Tenant)
	_, err = a.External("")
	require.Error(t, err)
	_, err = a.External("CN=a b")
	require.Error(t, err)
}

func TestFailLimiter(t *testing.T) {
	l := NewFailLimiter(3, time.Second)
	now := time.Unix(1000, 0)
	for range 3 {
		ok, _ := l.Begin("10.0.0.1:1234", now) // three failures at once
		require.True(t, ok)
	}
	ok, wait := l.Begin("10.0.0.1:5555", now)
	require.False(t, ok, "the port does not matter, nor that the others are still running")
	require.Equal(t, time.Second, wait)
	ok, _ = l.Begin("10.0.0.2:1", now)
	require.True(t, ok, "another address is not held back")
	l.Succeeded("10.0.0.2:1", now)
	ok, _ = l.Begin("10.0.0.1:1", now.Add(time.Second))
	require.True(t, ok, "a failure is forgiven per interval")
	l.Succeeded("10.0.0.1:1", now.Add(time.Second))
	ok, _ = l.Begin("10.0.0.1:1", now.Add(time.Second))
	require.True(t, ok, "a success gives its attempt back")
	ok, _ = l.Begin("10.0.0.3:1", now.Add(2*time.Minute))
	require.True(t, ok)
	require.Equal(t, 1, l.Len(), "full buckets are forgotten: only the new address's is left")
}

func FuzzScramStep(f *testing.F) {
	f.Add([]byte("n,,n=alice,r=abcdef"), []byte("c=biws,r=abcdef,p=AAAA"))
	f.Add([]byte("p=tls-unique,,n=x,r=y"), []byte(""))
	f.Add([]byte{0, 1, 2}, []byte("=,=,"))
	s, err := Open(nil, f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	if err := s.AddUser("alice", "", RoleUser, "password1"); err != nil {
		f.Fatal(err)
	}
	a := &Authenticator{Store: s}
	f.Fuzz(func(t *testing.T, first, final []byte) {
		c := a.NewScram()
		_, done, p, err := c.Step(first)
		if done {
			if p != nil || err == nil {
				t.Fatal("a one-message exchange authenticated")
			}
			return
		}
		_, done, p, err = c.Step(final)
		if !done || p != nil || err == nil {
			t.Fatalf("a forged final message was taken: done %v p %v err %v", done, p, err)
		}
	})
}

func FuzzTokenVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	v, _ := NewJWTVerifierKey("idp", pub)
	good, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": "idp", "sub": "a", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(priv)
	f.Add(good)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(tok)
		if err == nil && (p == nil || p.User != "a" || p.Tenant != "" || p.Role != RoleUser) {
			// Only the issuer's key signs: a string that verifies with
			// other claims would be a forgery found by the fuzzer.
			t.Fatalf("forged token accepted: %q as %+v", tok, p)
		}
		if err != nil && p != nil {
			t.Fatal("a principal with an error")
		}
	})
}
