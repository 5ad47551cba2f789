package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
)

// TLSFiles names the broker's TLS material: its certificate chain and key
// (PEM) and, for mutual TLS, the CA that signs client certificates.
type TLSFiles struct {
	Cert, Key, ClientCA string
}

// Certs is the broker's TLS material, reloaded when its files change: each
// new handshake (native or HTTPS) asks for the current configuration
// (tls.Config.GetConfigForClient), and at most once per certCheckEvery
// that asks the files for their size and modification time. Changed
// files are loaded and checked (the key matches the certificate, the
// certificate is valid now, the CA file holds a certificate); files that
// do not load leave the previous material in place, are logged and
// counted, and are tried again once they change again. Connections
// already up keep the certificate they were made with.
//
// Polling on handshakes rather than watching with inotify: it needs no
// goroutine and no dependency, costs a few stat calls a second at most and
// nothing while no one connects, and it sees every way files get replaced
// (rename over, rewrite in place, a Kubernetes secret's symlink swap, which
// inotify on the file itself misses).
type Certs struct {
	files TLSFiles
	log   *slog.Logger
	now   func() time.Time

	cur       atomic.Pointer[certGen]
	lastCheck atomic.Int64 // Unix ns of the last look at the files
	mu        sync.Mutex   // one reload at a time
	badSig    string       // the files' signature that failed to load; guarded by mu

	reloads      atomic.Uint64
	reloadErrors atomic.Uint64
}

// certCheckEvery bounds how often handshakes look at the files.
const certCheckEvery = time.Second

// certGen is one loaded generation of the material.
type certGen struct {
	sig          string
	leaf         *x509.Certificate
	native, http *tls.Config
}

// LoadCerts loads the files; an error says which file and why.
func LoadCerts(files TLSFiles, log *slog.Logger) (*Certs, error) {
	c := &Certs{files: files, log: log, now: time.Now}
	sig, err := c.signature()
	if err != nil {
		return nil, err
	}
	g, err := c.load(sig)
	if err != nil {
		return nil, err
	}
	c.cur.Store(g)
	c.lastCheck.Store(c.now().UnixNano())
	return c, nil
}

// Native is the configuration of the native TLS listener: client
// certificates signed by the client CA are required when there is one.
func (c *Certs) Native() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return c.current().native, nil
	}}
}

// HTTP is the configuration of the HTTPS listener: the same certificate,
// no client certificates (the admin token guards the API, and browsers
// rarely hold one).
func (c *Certs) HTTP() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.current().http, nil
		}}
}

// MutualTLS reports whether client certificates are required.
func (c *Certs) MutualTLS() bool { return c.files.ClientCA != "" }

// current is the material for a new handshake, reloaded first if the
// files changed.
func (c *Certs) current() *certGen {
	now := c.now().UnixNano()
	last := c.lastCheck.Load()
	if now-last >= int64(certCheckEvery) && c.lastCheck.CompareAndSwap(last, now) {
		c.Reload()
	}
	return c.cur.Load()
}

// Reload loads the files now if they changed since they were last
// loaded, and reports whether new material is in use.
func (c *Certs) Reload() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	sig, err := c.signature()
	if err == nil && (sig == c.cur.Load().sig || sig == c.badSig) {
		return false
	}
	var g *certGen
	if err == nil {
		g, err = c.load(sig)
	}
	if err != nil {
		c.badSig = sig
		c.reloadErrors.Add(1)
		c.log.Error("TLS certificate reload failed; the previous certificate stays in use", "err", err)
		return false
	}
	c.cur.Store(g)
	c.reloads.Add(1)
	c.log.Info("TLS certificate reloaded", "subject", g.leaf.Subject.String(), "not_after", g.leaf.NotAfter,
		"client_ca", c.files.ClientCA != "")
	return true
}

// signature is the files' sizes and modification times.
func (c *Certs) signature() (string, error) {
	sig := ""
	for _, f := range []string{c.files.Cert, c.files.Key, c.files.ClientCA} {
		if f == "" {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("TLS: %w", err)
		}
		sig += strconv.FormatInt(st.Size(), 10) + "@" + strconv.FormatInt(st.ModTime().UnixNano(), 10) + ";"
	}
	return sig, nil
}

// load reads and checks the files.
func (c *Certs) load(sig string) (*certGen, error) {
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS: certificate %s with key %s: %w", c.files.Cert, c.files.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS: certificate %s: %w", c.files.Cert, err)
		}
	}
	now := c.now()
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("TLS: certificate %s expired on %s", c.files.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("TLS: certificate %s is not valid before %s", c.files.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	g := &certGen{sig: sig, leaf: leaf,
		native: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		http:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}}
	if c.files.ClientCA != "" {
		pem, err := os.ReadFile(c.files.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("TLS: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS: client CA %s: %w", c.files.ClientCA, errNoPEMCert)
		}
		g.native.ClientAuth, g.native.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return g, nil
}

var errNoPEMCert = errors.New("no PEM certificate in it")

// The certificate families.
var (
	mCertReloads = promtext.NewCounter("ratatoskr_tls_cert_reloads_total",
		"TLS certificate reloads after their files changed, by result: ok, error (the previous certificate stays).")
	mCertExpiry = promtext.NewGauge("ratatoskr_tls_cert_expiry_timestamp_seconds",
		"When the TLS certificate in use expires (Unix seconds).")
)

// WriteMetrics writes the certificate's figures (docs/METRICS.md).
func (c *Certs) WriteMetrics(w io.Writer) {
	mCertReloads.WriteHeader(w)
	mCertReloads.WriteSample(w, `{result="ok"}`, strconv.FormatUint(c.reloads.Load(), 10))
	mCertReloads.WriteSample(w, `{result="error"}`, strconv.FormatUint(c.reloadErrors.Load(), 10))
	mCertExpiry.WriteUint(w, uint64(max(c.cur.Load().leaf.NotAfter.Unix(), 0)))
}
