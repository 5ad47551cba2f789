package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
)

// tokenFile is where a generated admin token is kept, under DataDir, so
// the dashboard address stays valid across restarts.
const tokenFile = "admin.token"

// AdminTokenPath is where a broker with data directory dataDir keeps the
// admin token it generated, for tools that print the dashboard's address.
func AdminTokenPath(dataDir string) string { return dataDir + "/" + tokenFile }

// adminToken returns the configured token, else the one kept in
// DataDir/admin.token, else a new random one written there (mode 0600,
// fsynced with its directory); and where it came from, for the log, which
// never shows the token itself.
func (s *Server) adminToken() (tok, from string, err error) {
	if s.cfg.AdminToken != "" {
		return s.cfg.AdminToken, "the configuration (--admin-token, RATATOSKR_ADMIN_TOKEN or the config file)", nil
	}
	path := AdminTokenPath(s.cfg.DataDir)
	b, err := storage.ReadFile(s.cfg.FS, path)
	if err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, path, nil
		}
		return "", "", fmt.Errorf("engine: %s is empty; delete it to generate a new token", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("engine: read admin token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", fmt.Errorf("engine: generate admin token: %w", err)
	}
	tok = hex.EncodeToString(raw[:])
	if err := writeTokenFile(s.cfg.FS, s.cfg.DataDir, path, tok); err != nil {
		return "", "", fmt.Errorf("engine: write admin token: %w", err)
	}
	return tok, path, nil
}

// writeTokenFile creates path readable by its owner only and makes it
// durable, so a token handed out (dashboard-url) is never lost to a crash.
func writeTokenFile(fsys vfs.FS, dir, path, tok string) error {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(tok + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		_ = fsys.Remove(path)
	}
	return err
}

// Authentication failures. Both answer 401 with WWW-Authenticate: Bearer,
// so a client cannot tell a stale token from a missing header by status.
var (
	errNoToken    = errors.New("missing credentials: send Authorization: Bearer <admin token or JWT>, or Basic <user:password>")
	errWrongToken = errors.New("the bearer token is not the admin token")
)

// maxEventAction bounds the request line an event carries: a refused
// request's path is the caller's to choose, up to the header limit.
const maxEventAction = 256

// clip cuts s to maxEventAction bytes, marking the cut.
func clip(s string) string {
	if len(s) <= maxEventAction {
		return s
	}
	return s[:maxEventAction] + "…"
}

// authLimit bounds the auth events a second: without a token anyone who
// reaches the HTTP port could otherwise fill the audit log.
const authLimit = 20

// eventLimiter lets through at most authLimit events a second and counts
// the rest; the next event let through carries that count.
type eventLimiter struct {
	mu         sync.Mutex
	second     int64
	n          int
	suppressed int
}

// allow reports whether an event at now may be emitted and, if so, how
// many were suppressed before it (counting itself).
func (l *eventLimiter) allow(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.second {
		l.second, l.n = s, 0
	}
	if l.n >= authLimit {
		l.suppressed++
		return 0, false
	}
	l.n++
	count := l.suppressed + 1
	l.suppressed = 0
	return count, true
}

// Who may call an endpoint: the admin API proper, /metrics and the
// dashboard's data need a broker admin (the admin token, or a user or
// token with the admin role); the security API (users, rules, tenants)
// takes tenant admins too, within their tenant.
const (
	adminOnly = iota
	tenantAdmins
)

type principalKey struct{}

// principalOf is who a request authenticated as (requireAuth).
func principalOf(r *http.Request) *auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(*auth.Principal)
	return p
}

// requireAuth lets a request through only with credentials of a principal
// allowed there: the admin token (compared in constant time), a bearer
// JWT of the trusted issuer, or a user's password (HTTP Basic). A refusal
// is a JSON error and an EventAuth; failed credentials count against the
// source address as on the native protocol.
func (s *Server) requireAuth(token string, who int, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.now()
		p, err := s.authenticate(r, want, now)
		if err == nil {
			p = s.effective(p)
		}
		if err == nil && p.Role != auth.RoleAdmin && (who == adminOnly || p.Role != auth.RoleTenantAdmin) {
			s.b.Emit(telemetry.Event{Time: now, Kind: telemetry.EventAccessDenied, Partition: -1, Remote: r.RemoteAddr,
				Principal: p.User, Tenant: p.Tenant, Action: clip(r.Method + " " + r.URL.Path), Err: errForbidden})
			writeError(w, http.StatusForbidden, "forbidden", errForbidden.Error())
			return
		}
		if err == nil {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
			return
		}
		if n, ok := s.authEvents.allow(now); ok {
			s.b.Emit(telemetry.Event{Time: now, Kind: telemetry.EventAuth, Partition: -1, Remote: r.RemoteAddr,
				Action: clip(r.Method + " " + r.URL.Path), Count: n, Err: err})
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ratatoskr"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
	})
}

// effective is p with the role its rules give it on the HTTP API: a
// principal allowed `admin` on the cluster is a broker admin there, and
// one allowed `admin` on its own tenant a tenant admin.
func (s *Server) effective(p *auth.Principal) *auth.Principal {
	if p.Role == auth.RoleAdmin || s.cfg.Auth == nil || s.cfg.Auth.Store == nil {
		return p
	}
	st := s.cfg.Auth.Store
	q := *p
	switch {
	case p.Tenant == "" && st.Authorize(p, auth.ResCluster, "*", auth.OpAdmin):
		q.Role = auth.RoleAdmin
	case p.Tenant != "" && p.Role == auth.RoleUser && st.Authorize(p, auth.ResTenant, p.Tenant, auth.OpAdmin):
		q.Role = auth.RoleTenantAdmin
	default:
		return p
	}
	return &q
}

// errForbidden refuses a principal the endpoint is not for.
var errForbidden = errors.New("this endpoint needs the admin role (or, for users, rules and tenants, a tenant admin)")

// authenticate finds who a request is.
func (s *Server) authenticate(r *http.Request, adminToken []byte, now time.Time) (*auth.Principal, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errNoToken
	}
	if s.cfg.AuthFailures != nil {
		if ok, wait := s.cfg.AuthFailures.Begin(r.RemoteAddr, now); !ok {
			return nil, fmt.Errorf("too many failed authentications from this address; retry in %s", wait.Round(time.Second))
		}
	}
	p, err := s.checkCredentials(r, h, adminToken)
	if err == nil && s.cfg.AuthFailures != nil {
		s.cfg.AuthFailures.Succeeded(r.RemoteAddr, now)
	}
	return p, err
}

// checkCredentials checks an Authorization header.
func (s *Server) checkCredentials(r *http.Request, h string, adminToken []byte) (*auth.Principal, error) {
	if got, ok := strings.CutPrefix(h, "Bearer "); ok && got != "" {
		got = strings.TrimSpace(got)
		if subtle.ConstantTimeCompare([]byte(got), adminToken) == 1 {
			return &auth.Principal{User: auth.AdminUser, Role: auth.RoleAdmin, Mechanism: auth.MechToken, AdminToken: true}, nil
		}
		if s.cfg.Auth != nil && s.cfg.Auth.JWT != nil && strings.Count(got, ".") == 2 {
			return s.cfg.Auth.Token(got)
		}
		return nil, errWrongToken
	}
	if user, pass, ok := r.BasicAuth(); ok && s.cfg.Auth != nil {
		return s.cfg.Auth.Password(user, pass)
	}
	return nil, errNoToken
}
