package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdg-go/scram"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// FileName is the store's file under the data directory.
const FileName = "security.json"

// Role is what a user may do beyond its rules.
type Role string

// Roles. An admin may do anything, in every tenant; a tenant admin may do
// anything within its tenant (its topics, groups, users and rules) and
// nothing outside it; a user may do what the rules allow.
const (
	RoleUser        Role = "user"
	RoleTenantAdmin Role = "tenant-admin"
	RoleAdmin       Role = "admin"
)

// ParseRole reads a role name; "" is RoleUser.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case "", RoleUser:
		return RoleUser, nil
	case RoleTenantAdmin, RoleAdmin:
		return Role(s), nil
	}
	return "", fmt.Errorf("unknown role %q (user, tenant-admin, admin)", s)
}

// ScramIterations is the PBKDF2 iteration count of new SCRAM credentials:
// RFC 7677's minimum is 4096; each client pays it once per connection, the
// broker never.
const ScramIterations = 8192

// ScramCreds are a user's stored SCRAM-SHA-256 keys (RFC 5802): what the
// broker needs to check a client's proof and prove itself back, and not
// enough to log in as the user.
type ScramCreds struct {
	Salt      []byte `json:"salt"`
	Iters     int    `json:"iterations"`
	StoredKey []byte `json:"stored_key"`
	ServerKey []byte `json:"server_key"`
}

// User is a user as the store keeps it.
type User struct {
	Name     string     `json:"name"`
	Tenant   string     `json:"tenant,omitempty"`
	Role     Role       `json:"role"`
	Disabled bool       `json:"disabled,omitempty"`
	Scram    ScramCreds `json:"scram_sha_256"`
	Created  time.Time  `json:"created"`
	Changed  time.Time  `json:"changed"`
}

// UserView is what listing users shows: no keys.
type UserView struct {
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant,omitempty"`
	Role     Role      `json:"role"`
	Disabled bool      `json:"disabled,omitempty"`
	Created  time.Time `json:"created"`
	Changed  time.Time `json:"changed"`
}

func (u *User) view() UserView {
	return UserView{Name: u.Name, Tenant: u.Tenant, Role: u.Role, Disabled: u.Disabled, Created: u.Created, Changed: u.Changed}
}

// Tenant is an isolated namespace of topics and groups, with its quotas.
type Tenant struct {
	Name    string    `json:"name"`
	Quotas  Quotas    `json:"quotas"`
	Created time.Time `json:"created"`
}

// Quotas bound what a tenant may hold and how fast it may go; 0 is no
// bound.
type Quotas struct {
	Connections         int64 `json:"connections,omitempty"`
	Topics              int64 `json:"topics,omitempty"`
	Partitions          int64 `json:"partitions,omitempty"`
	StorageBytes        int64 `json:"storage_bytes,omitempty"`
	PublishBytesPerSec  int64 `json:"publish_bytes_per_sec,omitempty"`
	PublishMsgsPerSec   int64 `json:"publish_messages_per_sec,omitempty"`
	DeliveryBytesPerSec int64 `json:"delivery_bytes_per_sec,omitempty"`
}

// file is security.json.
type file struct {
	Version int       `json:"version"`
	Secret  string    `json:"secret"` // hex; keys the fake credentials of unknown users
	Users   []*User   `json:"users"`
	Tenants []*Tenant `json:"tenants"`
	Rules   []Rule    `json:"rules"`
}

// Errors of the store's changes; the admin API maps them to statuses.
var (
	ErrUnknownUser   = errors.New("no such user")
	ErrUserExists    = errors.New("the user exists")
	ErrUnknownRule   = errors.New("no such rule")
	ErrUnknownTenant = errors.New("no such tenant")
	ErrTenantExists  = errors.New("the tenant exists")
	ErrTenantInUse   = errors.New("the tenant has users")
	ErrForbidden     = errors.New("not authorized")
	// ErrPersist: the change could not be written; nothing changed.
	ErrPersist = errors.New("the security file could not be written")
)

// Store holds the users, tenants and rules, and persists every change
// before it takes effect. Safe for concurrent use. Reads on the broker's
// hot paths take no lock: they go through a snapshot swapped on change.
type Store struct {
	fsys vfs.FS
	path string

	mu     sync.Mutex // serialises changes and their writes
	secret []byte
	snap   atomic.Pointer[snapshot]
	gen    atomic.Uint64

	revokeMu sync.Mutex
	onRevoke []func(user, tenant string)
	onChange []func()
}

// snapshot is one version of the store's contents, never changed once
// published.
type snapshot struct {
	users   map[string]*User
	tenants map[string]*Tenant
	rules   []Rule
}

// Open loads dir/security.json, or starts empty when there is none (the
// file is written at the first change).
func Open(fsys vfs.FS, dir string) (*Store, error) {
	if fsys == nil {
		fsys = vfs.Default()
	}
	s := &Store{fsys: fsys, path: dir + "/" + FileName}
	var f file
	data, err := storage.ReadFile(fsys, s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Version = 1
	case err != nil:
		return nil, fmt.Errorf("auth: read %s: %w", s.path, err)
	default:
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("auth: %s is not valid: %w", s.path, err)
		}
		if f.Version != 1 {
			return nil, fmt.Errorf("auth: %s has version %d; this broker reads version 1", s.path, f.Version)
		}
	}
	if f.Secret != "" {
		s.secret, err = hex.DecodeString(f.Secret)
		if err != nil || len(s.secret) < 16 {
			return nil, fmt.Errorf("auth: %s: its secret is not valid", s.path)
		}
	} else {
		s.secret = make([]byte, 32)
		_, _ = rand.Read(s.secret)
	}
	sn := &snapshot{users: map[string]*User{}, tenants: map[string]*Tenant{}, rules: f.Rules}
	for _, u := range f.Users {
		if err := ValidateUserName(u.Name); err != nil {
			return nil, fmt.Errorf("auth: %s: %w", s.path, err)
		}
		sn.users[u.Name] = u
	}
	for _, t := range f.Tenants {
		sn.tenants[t.Name] = t
	}
	s.snap.Store(sn)
	return s, nil
}

// Gen changes whenever users, tenants or rules change: an authorization
// cached under one generation is stale under another.
func (s *Store) Gen() uint64 { return s.gen.Load() }

// OnRevoke registers fn, called (outside the store's lock) with a user's
// name and tenant once it was deleted, disabled or its password changed,
// so that its live connections can be closed.
func (s *Store) OnRevoke(fn func(user, tenant string)) {
	s.revokeMu.Lock()
	s.onRevoke = append(s.onRevoke, fn)
	s.revokeMu.Unlock()
}

// OnChange registers fn, called (outside the store's lock) after every
// change, so that what was decided under the old contents is checked
// again (the subscriptions of open connections, their tenants' quotas).
func (s *Store) OnChange(fn func()) {
	s.revokeMu.Lock()
	s.onChange = append(s.onChange, fn)
	s.revokeMu.Unlock()
}

func (s *Store) revoked(user, tenant string) {
	s.revokeMu.Lock()
	fns := slices.Clone(s.onRevoke)
	s.revokeMu.Unlock()
	for _, fn := range fns {
		fn(user, tenant)
	}
}

func (s *Store) changed() {
	s.revokeMu.Lock()
	fns := slices.Clone(s.onChange)
	s.revokeMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// change applies fn to a copy of the contents, writes it, and publishes
// it; nothing changes when fn or the write fails.
func (s *Store) change(fn func(sn *snapshot) error) error {
	err := s.apply(fn)
	if err == nil {
		s.changed()
	}
	return err
}

// apply is change under the store's lock.
func (s *Store) apply(fn func(sn *snapshot) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.snap.Load()
	sn := &snapshot{users: make(map[string]*User, len(old.users)), tenants: make(map[string]*Tenant, len(old.tenants)),
		rules: slices.Clone(old.rules)}
	for k, u := range old.users {
		c := *u
		sn.users[k] = &c
	}
	for k, t := range old.tenants {
		c := *t
		sn.tenants[k] = &c
	}
	if err := fn(sn); err != nil {
		return err
	}
	f := file{Version: 1, Secret: hex.EncodeToString(s.secret), Rules: sn.rules}
	for _, u := range sn.users {
		f.Users = append(f.Users, u)
	}
	slices.SortFunc(f.Users, func(a, b *User) int { return strings.Compare(a.Name, b.Name) })
	for _, t := range sn.tenants {
		f.Tenants = append(f.Tenants, t)
	}
	slices.SortFunc(f.Tenants, func(a, b *Tenant) int { return strings.Compare(a.Name, b.Name) })
	data, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		return err
	}
	if err := storage.WriteFileAtomic(s.fsys, s.path, append(data, '\n'), true); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrPersist, s.path, err)
	}
	s.snap.Store(sn)
	s.gen.Add(1)
	return nil
}

// NewScramCreds derives the stored SCRAM-SHA-256 keys of a password with a
// fresh random salt.
func NewScramCreds(password string) (ScramCreds, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	c, err := scram.SHA256.NewClient("x", password, "")
	if err != nil {
		return ScramCreds{}, fmt.Errorf("the password cannot be used: %w", err)
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: ScramIterations})
	if err != nil {
		return ScramCreds{}, fmt.Errorf("the password cannot be used: %w", err)
	}
	return ScramCreds{Salt: salt, Iters: ScramIterations, StoredKey: sc.StoredKey, ServerKey: sc.ServerKey}, nil
}

// MinPasswordLen is the shortest password the store takes.
const MinPasswordLen = 8

// checkPassword refuses passwords too short to be one.
func checkPassword(p string) error {
	if len(p) < MinPasswordLen {
		return fmt.Errorf("a password has at least %d characters", MinPasswordLen)
	}
	if len(p) > 1024 {
		return fmt.Errorf("a password has at most 1024 bytes")
	}
	return nil
}

// AddUser creates a user with a password.
func (s *Store) AddUser(name, tenant string, role Role, password string) error {
	if err := ValidateUserName(name); err != nil {
		return err
	}
	if tenant != "" {
		if err := ValidateTenantName(tenant); err != nil {
			return err
		}
	}
	if role == RoleAdmin && tenant != "" {
		return fmt.Errorf("an admin belongs to no tenant; a tenant's admin has the role tenant-admin")
	}
	if role == RoleTenantAdmin && tenant == "" {
		return fmt.Errorf("a tenant-admin needs a tenant")
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	creds, err := NewScramCreds(password)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	return s.change(func(sn *snapshot) error {
		if _, ok := sn.users[name]; ok {
			return fmt.Errorf("%w: %s", ErrUserExists, name)
		}
		if tenant != "" && sn.tenants[tenant] == nil {
			return fmt.Errorf("%w: %s (create it first)", ErrUnknownTenant, tenant)
		}
		sn.users[name] = &User{Name: name, Tenant: tenant, Role: role, Scram: creds, Created: now, Changed: now}
		return nil
	})
}

// SetPassword replaces a user's credentials; its live connections are
// closed, since they authenticated with the old ones.
func (s *Store) SetPassword(name, password string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	creds, err := NewScramCreds(password)
	if err != nil {
		return err
	}
	var tenant string
	err = s.change(func(sn *snapshot) error {
		u := sn.users[name]
		if u == nil {
			return fmt.Errorf("%w: %s", ErrUnknownUser, name)
		}
		u.Scram, u.Changed, tenant = creds, time.Now().UTC(), u.Tenant
		return nil
	})
	if err == nil {
		s.revoked(name, tenant)
	}
	return err
}

// SetDisabled disables or enables a user; disabling closes its
// connections.
func (s *Store) SetDisabled(name string, disabled bool) error {
	var tenant string
	err := s.change(func(sn *snapshot) error {
		u := sn.users[name]
		if u == nil {
			return fmt.Errorf("%w: %s", ErrUnknownUser, name)
		}
		u.Disabled, u.Changed, tenant = disabled, time.Now().UTC(), u.Tenant
		return nil
	})
	if err == nil && disabled {
		s.revoked(name, tenant)
	}
	return err
}

// DeleteUser deletes a user, and its rules, and closes its connections.
func (s *Store) DeleteUser(name string) error {
	var tenant string
	err := s.change(func(sn *snapshot) error {
		u := sn.users[name]
		if u == nil {
			return fmt.Errorf("%w: %s", ErrUnknownUser, name)
		}
		tenant = u.Tenant
		delete(sn.users, name)
		sn.rules = slices.DeleteFunc(sn.rules, func(r Rule) bool { return r.Principal == name && r.Tenant == tenant })
		return nil
	})
	if err == nil {
		s.revoked(name, tenant)
	}
	return err
}

// User returns a user, by name.
func (s *Store) User(name string) (UserView, bool) {
	u := s.snap.Load().users[name]
	if u == nil {
		return UserView{}, false
	}
	return u.view(), true
}

// Users lists the users of tenant (all users when all is set), by name.
func (s *Store) Users(tenant string, all bool) []UserView {
	var out []UserView
	for _, u := range s.snap.Load().users {
		if all || u.Tenant == tenant {
			out = append(out, u.view())
		}
	}
	slices.SortFunc(out, func(a, b UserView) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// HasUsers reports whether any user exists.
func (s *Store) HasUsers() bool { return len(s.snap.Load().users) > 0 }

// AddTenant creates a tenant.
func (s *Store) AddTenant(name string, q Quotas) error {
	if err := ValidateTenantName(name); err != nil {
		return err
	}
	if err := q.check(); err != nil {
		return err
	}
	return s.change(func(sn *snapshot) error {
		if sn.tenants[name] != nil {
			return fmt.Errorf("%w: %s", ErrTenantExists, name)
		}
		sn.tenants[name] = &Tenant{Name: name, Quotas: q, Created: time.Now().UTC()}
		return nil
	})
}

// SetQuotas replaces a tenant's quotas.
func (s *Store) SetQuotas(name string, q Quotas) error {
	if err := q.check(); err != nil {
		return err
	}
	return s.change(func(sn *snapshot) error {
		t := sn.tenants[name]
		if t == nil {
			return fmt.Errorf("%w: %s", ErrUnknownTenant, name)
		}
		t.Quotas = q
		return nil
	})
}

// DeleteTenant deletes a tenant that has no users left; its rules go with
// it. Its topics stay until deleted: data is never removed as a side effect.
func (s *Store) DeleteTenant(name string) error {
	return s.change(func(sn *snapshot) error {
		if sn.tenants[name] == nil {
			return fmt.Errorf("%w: %s", ErrUnknownTenant, name)
		}
		for _, u := range sn.users {
			if u.Tenant == name {
				return fmt.Errorf("%w: delete %s's users first (%s is one)", ErrTenantInUse, name, u.Name)
			}
		}
		delete(sn.tenants, name)
		sn.rules = slices.DeleteFunc(sn.rules, func(r Rule) bool { return r.Tenant == name })
		return nil
	})
}

// Tenant returns a tenant, by name.
func (s *Store) Tenant(name string) (Tenant, bool) {
	t := s.snap.Load().tenants[name]
	if t == nil {
		return Tenant{}, false
	}
	return *t, true
}

// Tenants lists the tenants, by name.
func (s *Store) Tenants() []Tenant {
	ts := s.snap.Load().tenants
	out := make([]Tenant, 0, len(ts))
	for _, t := range ts {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (q Quotas) check() error {
	for _, v := range []int64{q.Connections, q.Topics, q.Partitions, q.StorageBytes, q.PublishBytesPerSec,
		q.PublishMsgsPerSec, q.DeliveryBytesPerSec} {
		if v < 0 {
			return fmt.Errorf("a quota is 0 (none) or more")
		}
	}
	return nil
}

// AddRule adds a rule and returns it with its ID.
func (s *Store) AddRule(r Rule) (Rule, error) {
	if err := r.Check(); err != nil {
		return Rule{}, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r.ID = hex.EncodeToString(id[:])
	err := s.change(func(sn *snapshot) error {
		if r.Tenant != "" && sn.tenants[r.Tenant] == nil {
			return fmt.Errorf("%w: %s", ErrUnknownTenant, r.Tenant)
		}
		sn.rules = append(sn.rules, r)
		return nil
	})
	return r, err
}

// DeleteRule deletes a rule of tenant by ID (any tenant's when all is set).
func (s *Store) DeleteRule(tenant string, all bool, id string) error {
	return s.change(func(sn *snapshot) error {
		i := slices.IndexFunc(sn.rules, func(r Rule) bool { return r.ID == id && (all || r.Tenant == tenant) })
		if i < 0 {
			return fmt.Errorf("%w: %s", ErrUnknownRule, id)
		}
		sn.rules = slices.Delete(sn.rules, i, i+1)
		return nil
	})
}

// Rules lists tenant's rules (every tenant's when all is set), in the
// order they were added.
func (s *Store) Rules(tenant string, all bool) []Rule {
	var out []Rule
	for _, r := range s.snap.Load().rules {
		if all || r.Tenant == tenant {
			out = append(out, r)
		}
	}
	return out
}

// Authorize reports whether p may do op on the resource res named name
// (within p's tenant: names are the tenant's own). Admins may do anything;
// a tenant admin anything within its tenant but cluster operations; others
// what the rules allow, deny winning, nothing without a rule.
func (s *Store) Authorize(p *Principal, res Resource, name string, op Op) bool {
	switch p.Role {
	case RoleAdmin:
		return true
	case RoleTenantAdmin:
		if res != ResCluster {
			return true
		}
	}
	return decide(s.snap.Load().rules, p.Tenant, p.User, res, name, op)
}

// scramLookup finds a user's stored keys for a SCRAM exchange. An unknown
// or disabled user gets keys derived from the store's secret, the same on
// every attempt, so that the exchange runs to its end and fails there like
// a wrong password: the broker does not tell who exists.
func (s *Store) scramLookup(name string) (scram.StoredCredentials, error) {
	if u := s.snap.Load().users[name]; u != nil && !u.Disabled {
		c := u.Scram
		return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(c.Salt), Iters: c.Iters},
			StoredKey: c.StoredKey, ServerKey: c.ServerKey}, nil
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(name))
	sum := m.Sum(nil)
	return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(sum[:16]), Iters: ScramIterations},
		StoredKey: sum, ServerKey: sum}, nil
}

// principal makes the principal of an authenticated user.
func (s *Store) principal(name, mech string) (*Principal, error) {
	u := s.snap.Load().users[name]
	if u == nil || u.Disabled {
		return nil, errBadCredentials
	}
	return &Principal{User: u.Name, Tenant: u.Tenant, Role: u.Role, Mechanism: mech}, nil
}
