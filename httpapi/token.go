package httpapi

import (
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
	errNoToken    = errors.New("missing bearer token: send Authorization: Bearer <admin token>")
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

// requireToken lets a request through only with the admin token in its
// Authorization header, compared in constant time with token. A refusal
// is a JSON error and an EventAuth.
func (s *Server) requireToken(token string, next http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := errNoToken
		if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got != "" {
			if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) == 1 {
				next.ServeHTTP(w, r)
				return
			}
			err = errWrongToken
		}
		now := s.now()
		if n, ok := s.authEvents.allow(now); ok {
			s.b.Emit(telemetry.Event{Time: now, Kind: telemetry.EventAuth, Partition: -1, Remote: r.RemoteAddr,
				Action: clip(r.Method + " " + r.URL.Path), Count: n, Err: err})
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ratatoskr"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
	})
}
