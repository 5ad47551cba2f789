package engine

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// devFiles is a development bundle written into a test's directory.
type devFiles struct {
	dir    string
	bundle *devcert.Bundle
}

func (f devFiles) path(name string) string { return filepath.Join(f.dir, name) }

// writeDevCerts generates a bundle (devcert) into a temporary directory.
func writeDevCerts(t testing.TB) devFiles {
	t.Helper()
	b, err := devcert.Generate()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, b.Write(dir, false))
	return devFiles{dir: dir, bundle: b}
}

// withTLS adds a TLS listener on a free port with the bundle's server
// certificate; mutual requires client certificates from its CA.
func withTLS(c *Config, f devFiles, mutual bool) {
	c.TLSAddr = "127.0.0.1:0"
	c.TLSCertFile, c.TLSKeyFile = f.path(devcert.Files.Server), f.path(devcert.Files.ServerKey)
	if mutual {
		c.TLSClientCAFile = f.path(devcert.Files.CA)
	}
}

// startTLSBroker runs a broker with only a TLS listener.
func startTLSBroker(t testing.TB, f devFiles, mutual bool, mutate func(*Config)) *Engine {
	t.Helper()
	return startBroker(t, func(c *Config) {
		c.Addr = "off"
		withTLS(c, f, mutual)
		if mutate != nil {
			mutate(c)
		}
	})
}

func clientTLS(t testing.TB, b *devcert.Bundle, cert bool) *tls.Config {
	t.Helper()
	cfg, err := b.ClientTLS(cert)
	require.NoError(t, err)
	return cfg
}

// dialTLS connects a client over TLS, closed when the test ends.
func dialTLS(t testing.TB, e *Engine, cfg *tls.Config, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := tryDialTLS(e.TLSAddr().String(), cfg, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func tryDialTLS(addr string, cfg *tls.Config, opts ...client.Option) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Dial(ctx, addr, append([]client.Option{client.WithTLS(cfg), client.WithoutReconnect()}, opts...)...)
}

// tlsRaw opens a raw protocol connection over TLS.
func tlsRaw(t testing.TB, e *Engine, cfg *tls.Config) *rawConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.TLSAddr().String(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

func metricsText(e *Engine) string {
	var b bytes.Buffer
	e.writeMetrics(&b)
	return b.String()
}

// noTLSGoroutines waits until the TLS transport's goroutines are gone.
func noTLSGoroutines(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "server.(*tlsTransport)")
	}, 20*time.Second, 5*time.Millisecond, "TLS connection goroutines left after shutdown")
}

func TestTLSPublishSubscribeFetchGroup(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	require.Nil(t, e.Addr(), "--addr off: no plaintext listener")
	ctx := testCtx(t)
	cfg := clientTLS(t, f.bundle, false)
	pub, sub := dialTLS(t, e, cfg), dialTLS(t, e, cfg)
	require.NoError(t, pub.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	got := make(chan client.Delivery, 1000)
	_, err := sub.Subscribe(ctx, "orders", func(d *client.Delivery) { got <- d.Clone() })
	require.NoError(t, err)
	const n = 500
	value := bytes.Repeat([]byte("x"), 300) // many records per TLS record and across them
	for i := range n {
		require.NoError(t, pub.PublishAsync(ctx, "orders", client.Message{Key: []byte(fmt.Sprint(i)), Value: value}))
	}
	require.NoError(t, pub.Flush(ctx))
	for i := range n {
		d := <-got
		require.Equal(t, int64(i), d.Offset)
		require.Equal(t, fmt.Sprint(i), string(d.Key))
	}
	fetched, err := sub.Fetch(ctx, "orders", 0, client.AtOffset(0))
	require.NoError(t, err)
	require.NotEmpty(t, fetched.Messages)
	require.Equal(t, int64(0), fetched.Messages[0].Offset)

	var handled atomic.Int64
	g, err := client.JoinGroup(ctx, e.TLSAddr().String(), client.GroupConfig{Group: "billing", Topic: "orders",
		Start: client.Earliest, Handler: func(*client.GroupMessage) error { handled.Add(1); return nil }},
		client.WithTLS(cfg))
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	require.Eventually(t, func() bool { return handled.Load() == n }, 30*time.Second, time.Millisecond)
	require.GreaterOrEqual(t, e.Stats().Connections, int64(3))
}

func TestTLSMutualIdentityAndRefusals(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, true, nil)
	ctx := testCtx(t)

	c := dialTLS(t, e, clientTLS(t, f.bundle, true))
	require.NoError(t, c.CreateTopic(ctx, "m", client.TopicConfig{}))
	var ids []string
	for _, conn := range e.srv.Connections() {
		ids = append(ids, conn.Identity)
	}
	require.Equal(t, []string{"CN=" + devcert.ClientName}, ids)

	// No client certificate.
	_, err := tryDialTLS(e.TLSAddr().String(), clientTLS(t, f.bundle, false))
	require.Error(t, err)
	// A certificate from another CA.
	other := writeDevCerts(t)
	foreign := clientTLS(t, f.bundle, false)
	foreign.Certificates = clientTLS(t, other.bundle, true).Certificates
	_, err = tryDialTLS(e.TLSAddr().String(), foreign)
	require.Error(t, err)
	require.Eventually(t, func() bool {
		m := metricsText(e)
		return strings.Contains(m, `ratatoskr_tls_handshake_failures_total{reason="no_client_cert"} 1`) &&
			strings.Contains(m, `ratatoskr_tls_handshake_failures_total{reason="bad_client_cert"} 1`)
	}, 20*time.Second, time.Millisecond)
	// The broker serves on.
	_, err = c.Publish(ctx, "m", client.Message{Value: []byte("still here")})
	require.NoError(t, err)
}

func TestTLSPlaintextClientOnTLSPort(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, e.TLSAddr().String(), client.WithoutReconnect())
	require.Error(t, err)
	require.Contains(t, err.Error(), "TLS port")
	require.Eventually(t, func() bool {
		return strings.Contains(metricsText(e), `ratatoskr_tls_handshake_failures_total{reason="not_tls"} 1`)
	}, 20*time.Second, time.Millisecond)
	c := dialTLS(t, e, clientTLS(t, f.bundle, false))
	require.NoError(t, c.CreateTopic(testCtx(t), "after", client.TopicConfig{}))
}

func TestTLSClientOnPlaintextPort(t *testing.T) {
	f := writeDevCerts(t)
	e := startBroker(t, func(c *Config) { withTLS(c, f, false) })
	_, err := tryDialTLS(e.Addr().String(), clientTLS(t, f.bundle, false))
	require.Error(t, err)
	require.Contains(t, err.Error(), "may be plaintext")
	require.Contains(t, metricsText(e), "ratatoskr_tls_on_plaintext_port_total 1\n")
	// Both listeners serve the same broker.
	ctx := testCtx(t)
	plain := dial(t, e)
	require.NoError(t, plain.CreateTopic(ctx, "both", client.TopicConfig{}))
	secure := dialTLS(t, e, clientTLS(t, f.bundle, false))
	_, err = secure.Publish(ctx, "both", client.Message{Value: []byte("v")})
	require.NoError(t, err)
}

// rewrite replaces a file the way deployment tools do: a new file renamed
// over the old one.
func rewrite(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestTLSCertReload(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	ctx := testCtx(t)
	oldCA := clientTLS(t, f.bundle, false)
	before := dialTLS(t, e, oldCA)
	require.NoError(t, before.CreateTopic(ctx, "r", client.TopicConfig{}))

	// A bad certificate: the old one stays, the failure is counted.
	rewrite(t, f.path(devcert.Files.Server), []byte("not a certificate"))
	require.False(t, e.ReloadCerts())
	require.Contains(t, metricsText(e), `ratatoskr_tls_cert_reloads_total{result="error"} 1`)
	dialTLS(t, e, oldCA)

	// A new CA's certificate: new connections get it on their own (the
	// files are looked at once a second at most), old ones stay up.
	next, err := devcert.Generate()
	require.NoError(t, err)
	rewrite(t, f.path(devcert.Files.ServerKey), next.ServerKey)
	rewrite(t, f.path(devcert.Files.Server), next.Server)
	newCA := clientTLS(t, next, false)
	require.Eventually(t, func() bool {
		c, err := tryDialTLS(e.TLSAddr().String(), newCA)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}, 20*time.Second, 10*time.Millisecond)
	require.Contains(t, metricsText(e), `ratatoskr_tls_cert_reloads_total{result="ok"} 1`)
	_, err = tryDialTLS(e.TLSAddr().String(), oldCA)
	require.Error(t, err, "the old CA no longer verifies the broker")
	_, err = before.Publish(ctx, "r", client.Message{Value: []byte("old connection")})
	require.NoError(t, err)
}

// selfSigned writes a certificate valid from notBefore to notAfter and
// its key into dir.
func selfSigned(t *testing.T, dir string, notBefore, notAfter time.Time) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"},
		NotBefore: notBefore, NotAfter: notAfter, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	cert, key = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return cert, key
}

func TestTLSBadFilesAtStartup(t *testing.T) {
	f := writeDevCerts(t)
	newWith := func(mutate func(*Config)) error {
		cfg := DefaultConfig()
		cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		withTLS(&cfg, f, false)
		mutate(&cfg)
		_, err := New(cfg)
		return err
	}
	expCert, expKey := selfSigned(t, t.TempDir(), time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	err := newWith(func(c *Config) { c.TLSCertFile, c.TLSKeyFile = expCert, expKey })
	require.ErrorContains(t, err, "expired on")

	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("garbage"), 0o600))
	err = newWith(func(c *Config) { c.TLSCertFile = garbage })
	require.ErrorContains(t, err, garbage)
	err = newWith(func(c *Config) { c.TLSClientCAFile = garbage })
	require.ErrorContains(t, err, "no PEM certificate")
	err = newWith(func(c *Config) { c.TLSKeyFile = filepath.Join(t.TempDir(), "missing.pem") })
	require.ErrorContains(t, err, "missing.pem")
	err = newWith(func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "", "" })
	require.ErrorContains(t, err, "needs a certificate")
	err = newWith(func(c *Config) { c.Addr, c.TLSAddr = "off", "" })
	require.ErrorContains(t, err, "no listener")
}

// bareConns opens n TCP connections to the TLS port that never start TLS.
func bareConns(t *testing.T, e *Engine, n int) []net.Conn {
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", e.TLSAddr().String(), 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		conns[i] = c
	}
	return conns
}

// expectEOF reads until the broker closes c.
func expectEOF(t *testing.T, c net.Conn, why string) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, why)
}

func TestTLSUnfinishedHandshakesAreBoundedPerAddress(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, func(c *Config) { c.MaxHandshakesPerAddr = 3 })
	bare := bareConns(t, e, 3)
	// The fourth from the same address is closed at once; those three
	// stay until their handshake timeout (the default 10 s, far off).
	fourth := bareConns(t, e, 1)[0]
	expectEOF(t, fourth, "refused")
	require.Equal(t, uint64(1), e.srv.Counters().RefusedPerAddr)
	// One that goes away frees its place.
	require.NoError(t, bare[0].Close())
	require.Eventually(t, func() bool {
		c, err := tryDialTLS(e.TLSAddr().String(), clientTLS(t, f.bundle, false))
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}, 20*time.Second, 10*time.Millisecond)
}

func TestTLSHandshakeTimeout(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, func(c *Config) { c.HandshakeTimeout = time.Second })
	// Three connections that never start TLS, one that finishes TLS but
	// never says Hello: each closed at the handshake timeout.
	for _, c := range bareConns(t, e, 3) {
		expectEOF(t, c, "closed at the handshake timeout")
	}
	silent := tlsRaw(t, e, clientTLS(t, f.bundle, false))
	silent.expectErrorThenClose(wire.CodeHandshakeRequired)
	require.Equal(t, uint64(4), e.srv.Counters().HandshakeTimeouts)
	require.Contains(t, metricsText(e), `ratatoskr_tls_handshake_failures_total{reason="timeout"} 3`)
	// A good client still gets in.
	dialTLS(t, e, clientTLS(t, f.bundle, false))
}

func TestTLSSlowConsumerIsDisconnected(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, func(c *Config) {
		c.MaxPendingBytes, c.MaxFrameBytes = 8<<20, 2<<20
		c.MaxMessageBytes = 1 << 20
		c.SlowConsumerTimeout = 500 * time.Millisecond
	})
	ctx := testCtx(t)
	cfg := clientTLS(t, f.bundle, false)
	pub := dialTLS(t, e, cfg)
	require.NoError(t, pub.CreateTopic(ctx, "flood", client.TopicConfig{Storage: "memory"}))
	// A subscriber that never reads.
	stuck := tlsRaw(t, e, cfg)
	stuck.hello()
	stuck.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "flood", Partition: wire.PartitionAny}).Append(nil))
	require.Equal(t, wire.TypeSubscribeOK, stuck.next().Type)
	value := bytes.Repeat([]byte("v"), 64<<10)
	for e.Stats().SlowConsumers == 0 {
		_, err := pub.Publish(ctx, "flood", client.Message{Value: value})
		require.NoError(t, err, "the producer is slowed, never failed")
	}
	_, err := pub.Publish(ctx, "flood", client.Message{Value: []byte("after")})
	require.NoError(t, err)
}

func TestTLSGracefulShutdownAndNoLeaks(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	ctx := testCtx(t)
	cfg := clientTLS(t, f.bundle, false)
	c := dialTLS(t, e, cfg)
	require.NoError(t, c.CreateTopic(ctx, "g", client.TopicConfig{}))
	got := make(chan client.Delivery, 10)
	_, err := c.Subscribe(ctx, "g", func(d *client.Delivery) { got <- d.Clone() })
	require.NoError(t, err)
	_, err = c.Publish(ctx, "g", client.Message{Value: []byte("before")})
	require.NoError(t, err)
	require.Equal(t, "before", string((<-got).Value))
	// A connection still in its TLS handshake, and one that said nothing.
	half, err := net.Dial("tcp", e.TLSAddr().String())
	require.NoError(t, err)
	defer func() { _ = half.Close() }()
	shutdown(t, e)
	_, err = c.Publish(ctx, "g", client.Message{Value: []byte("after")})
	require.Error(t, err)
	noTLSGoroutines(t)
}

func TestTLSReconnect(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	addr := e.TLSAddr().String()
	ctx := testCtx(t)
	cfg := clientTLS(t, f.bundle, false)
	c, err := client.Dial(ctx, addr, client.WithTLS(cfg), client.WithReconnect(time.Millisecond, 20*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.CreateTopic(ctx, "re", client.TopicConfig{}))
	shutdown(t, e)
	dir := t.TempDir()
	startBroker(t, func(cf *Config) {
		cf.Addr, cf.DataDir = "off", dir
		withTLS(cf, f, false)
		cf.TLSAddr = addr
	})
	require.Eventually(t, func() bool {
		_, err := c.Publish(ctx, "re", client.Message{Value: []byte("again")})
		return err == nil
	}, 30*time.Second, 10*time.Millisecond)
}

func TestHTTPSWithTheBrokerCertificate(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, nil)
	cfg := clientTLS(t, f.bundle, false)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	resp, err := hc.Get("https://" + e.HTTPAddr() + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// Plain HTTP on it fails.
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + e.HTTPAddr() + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	}
	// --no-http-tls keeps HTTP plaintext.
	plain := startTLSBroker(t, f, false, func(c *Config) { c.HTTPTLS = false })
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + plain.HTTPAddr() + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// side is the listener a test talks to: the plaintext one, or TLS.
type side struct {
	files devFiles
	tls   bool
	e     *Engine
}

func newSide(t *testing.T, overTLS bool) *side {
	n := &side{tls: overTLS}
	if overTLS {
		n.files = writeDevCerts(t)
	}
	return n
}

// start runs the broker, with a TLS listener too when the side is TLS.
func (n *side) start(t *testing.T, mutate func(*Config)) *Engine {
	n.e = startBroker(t, func(c *Config) {
		if n.tls {
			withTLS(c, n.files, false)
		}
		mutate(c)
	})
	return n.e
}

func (n *side) dial(t *testing.T, opts ...client.Option) *client.Client {
	if n.tls {
		return dialTLS(t, n.e, clientTLS(t, n.files.bundle, false), opts...)
	}
	return dial(t, n.e, opts...)
}

func (n *side) raw(t *testing.T) *rawConn {
	if n.tls {
		return tlsRaw(t, n.e, clientTLS(t, n.files.bundle, false))
	}
	return dialRaw(t, n.e)
}

// With authentication on, a mutual-TLS connection authenticates as its
// certificate's common name (EXTERNAL, or no mechanism); the rules and
// the user of that name (its tenant) apply.
func TestTLSClientCertificateAuthenticates(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, true, func(c *Config) { c.Auth = true })
	sec := e.Security()
	ctx := testCtx(t)
	name := devcert.ClientName

	c := dialTLS(t, e, clientTLS(t, f.bundle, true)) // no mechanism: the certificate's
	err := c.CreateTopic(ctx, "certs", client.TopicConfig{})
	require.ErrorIs(t, err, client.ErrNotAuthorized)
	require.ErrorContains(t, err, name+" may not create")
	_, err = sec.AddRule(auth.Rule{Principal: name, Resource: auth.ResTopic, Name: "certs", Ops: auth.OpAll})
	require.NoError(t, err)
	require.NoError(t, c.CreateTopic(ctx, "certs", client.TopicConfig{}))

	explicit := dialTLS(t, e, clientTLS(t, f.bundle, true), client.WithCertificateIdentity())
	_, err = explicit.Publish(ctx, "certs", client.Message{Value: []byte("by certificate")})
	require.NoError(t, err)

	// A user of that name puts the certificate in its tenant.
	require.NoError(t, sec.AddTenant("acme", auth.Quotas{}))
	require.NoError(t, sec.AddUser(name, "acme", auth.RoleTenantAdmin, "unused-password"))
	inTenant := dialTLS(t, e, clientTLS(t, f.bundle, true))
	topics, err := inTenant.ListTopics(ctx)
	require.NoError(t, err)
	require.Empty(t, topics, "acme's namespace, not the broker's")
	// Disabling that user closes its certificate's connections too.
	require.NoError(t, sec.SetDisabled(name, true))
	<-inTenant.Done()
	require.ErrorIs(t, inTenant.Err(), client.ErrAuthFailed)
	_, err = tryDialTLS(e.TLSAddr().String(), clientTLS(t, f.bundle, true))
	require.ErrorIs(t, err, client.ErrAuthFailed)
}

// EXTERNAL without a verified certificate is refused.
func TestExternalNeedsAVerifiedCertificate(t *testing.T) {
	f := writeDevCerts(t)
	e := startTLSBroker(t, f, false, func(c *Config) { c.Auth = true })
	_, err := tryDialTLS(e.TLSAddr().String(), clientTLS(t, f.bundle, false), client.WithCertificateIdentity())
	require.ErrorIs(t, err, client.ErrAuthFailed)
	require.ErrorContains(t, err, "verified client certificate")
	_, err = tryDialTLS(e.TLSAddr().String(), clientTLS(t, f.bundle, false))
	require.ErrorIs(t, err, client.ErrAuthFailed)
	require.ErrorContains(t, err, "authentication required")
}
