package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/xdg-go/scram"
)

// Principal is who a connection or request authenticated as.
type Principal struct {
	User      string
	Tenant    string
	Role      Role
	Mechanism string // how: SCRAM-SHA-256, TOKEN (JWT or the admin token), EXTERNAL (a client certificate)
	// Expires is when the credential stops being valid (a JWT's exp);
	// zero for none. The broker closes a connection when it passes.
	Expires time.Time
	// AdminToken is set for the admin token's principal, which no user
	// change revokes.
	AdminToken bool
}

// String names the principal for logs and audit lines.
func (p *Principal) String() string {
	if p == nil {
		return "anonymous"
	}
	if p.Tenant != "" {
		return p.Tenant + "/" + p.User
	}
	return p.User
}

// Authentication mechanisms, as Hello names them.
const (
	MechSCRAM    = "SCRAM-SHA-256"
	MechToken    = "TOKEN"
	MechExternal = "EXTERNAL"
)

// AdminUser is the principal the admin token authenticates as.
const AdminUser = "admin"

// errBadCredentials is every credential failure's error: the client learns
// that it failed, not why (which user exists, which key matched).
var errBadCredentials = errors.New("authentication failed: unknown user or wrong credentials")

// ErrBadCredentials is what a refused credential returns.
var ErrBadCredentials = errBadCredentials

// ValidateUserName checks a user name: 1-128 bytes of letters, digits and
// . _ - @, so that it is printable in logs and usable in rules as is.
func ValidateUserName(n string) error {
	if n == "" || len(n) > 128 {
		return fmt.Errorf("a user name is 1-128 characters")
	}
	if n == AdminUser {
		return fmt.Errorf("the user name %q is the admin token's", AdminUser)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !userNameChar(c) {
			return fmt.Errorf("user name %q: only a-z, A-Z, 0-9, '.', '_', '-' and '@'", n)
		}
	}
	return nil
}

// ValidateTenantName checks a tenant name: 1-64 bytes of a-z, 0-9, '_' and
// '-'. It never holds the separator of qualified names (TenantSep).
func ValidateTenantName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("a tenant name is 1-64 characters")
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !tenantNameChar(c) {
			return fmt.Errorf("tenant name %q: only a-z, 0-9, '_' and '-'", n)
		}
	}
	return nil
}

func userNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@'
}

func tenantNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// Authenticator checks credentials: the user store's, the admin token and
// a JWT issuer's.
type Authenticator struct {
	Store      *Store
	AdminToken func() string // the admin token, or "" for none
	JWT        *JWTVerifier  // nil: tokens other than the admin token are refused
}

// Token authenticates a bearer token: the admin token, or a JWT.
func (a *Authenticator) Token(tok string) (*Principal, error) {
	if a.AdminToken != nil {
		if at := a.AdminToken(); at != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(at)) == 1 {
			return &Principal{User: AdminUser, Role: RoleAdmin, Mechanism: MechToken, AdminToken: true}, nil
		}
	}
	if a.JWT == nil || strings.Count(tok, ".") != 2 {
		return nil, errBadCredentials
	}
	p, err := a.JWT.Verify(tok)
	if err != nil {
		return nil, err
	}
	if p.Tenant != "" {
		if _, ok := a.Store.Tenant(p.Tenant); !ok {
			return nil, fmt.Errorf("the token's tenant %q does not exist on this broker", p.Tenant)
		}
	}
	if u, ok := a.Store.User(p.User); ok && (u.Disabled || u.Tenant != p.Tenant) {
		// A token cannot speak for a disabled user, nor move one into
		// another tenant.
		return nil, errBadCredentials
	}
	return p, nil
}

// External authenticates the identity of a verified client certificate:
// the user of that name if there is one (its tenant and role), else a
// user without a tenant that the rules may grant to.
func (a *Authenticator) External(identity string) (*Principal, error) {
	if identity == "" || ValidateUserName(identity) != nil {
		return nil, fmt.Errorf("authentication failed: the client certificate names no usable identity (%q)", identity)
	}
	if u, ok := a.Store.User(identity); ok {
		if u.Disabled {
			return nil, errBadCredentials
		}
		return &Principal{User: u.Name, Tenant: u.Tenant, Role: u.Role, Mechanism: MechExternal}, nil
	}
	return &Principal{User: identity, Role: RoleUser, Mechanism: MechExternal}, nil
}

// Password checks a user's password against its stored SCRAM keys (for
// HTTP Basic authentication): it derives the client key as a SCRAM client
// would and compares its hash with the stored key.
func (a *Authenticator) Password(name, password string) (*Principal, error) {
	sc, _ := a.Store.scramLookup(name)
	salted, err := pbkdf2.Key(sha256.New, password, []byte(sc.Salt), sc.Iters, sha256.Size)
	if err != nil {
		return nil, errBadCredentials
	}
	m := hmac.New(sha256.New, salted)
	m.Write([]byte("Client Key"))
	stored := sha256.Sum256(m.Sum(nil))
	if subtle.ConstantTimeCompare(stored[:], sc.StoredKey) != 1 {
		return nil, errBadCredentials
	}
	p, err := a.Store.principal(name, "PASSWORD")
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ScramConv is one SCRAM-SHA-256 exchange, server side.
type ScramConv struct {
	store *Store
	conv  *scram.ServerConversation
}

// NewScram starts a SCRAM-SHA-256 exchange.
func (a *Authenticator) NewScram() *ScramConv {
	srv, _ := scram.SHA256.NewServer(a.Store.scramLookup)
	return &ScramConv{store: a.Store, conv: srv.NewConversation()}
}

// Step takes the client's next message and returns the broker's answer.
// Once done is set, p is the principal (or err says why not).
func (c *ScramConv) Step(msg []byte) (answer []byte, done bool, p *Principal, err error) {
	if len(msg) > 4096 {
		return nil, true, nil, fmt.Errorf("authentication failed: a SCRAM message is at most 4096 bytes")
	}
	resp, err := c.conv.Step(string(msg))
	if err != nil {
		return nil, true, nil, errBadCredentials
	}
	if !c.conv.Done() {
		return []byte(resp), false, nil, nil
	}
	if !c.conv.Valid() {
		return nil, true, nil, errBadCredentials
	}
	if az := c.conv.AuthzID(); az != "" && az != c.conv.Username() {
		return nil, true, nil, fmt.Errorf("authentication failed: acting for another user (authzid) is not supported")
	}
	p, err = c.store.principal(c.conv.Username(), MechSCRAM)
	if err != nil {
		return nil, true, nil, err
	}
	return []byte(resp), true, p, nil
}
