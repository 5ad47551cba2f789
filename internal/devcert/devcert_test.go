package devcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	require.NotNil(t, b)
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return c
}

// TestCertificatesVerify: the server certificate verifies for localhost,
// the loopback addresses and the extra hosts, as a server; the client
// certificate as a client; neither against another CA.
func TestCertificatesVerify(t *testing.T) {
	b, err := Generate("broker.example", "10.1.2.3")
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(b.CA))
	srv := parse(t, b.Server)
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "broker.example", "10.1.2.3"} {
		_, err := srv.Verify(x509.VerifyOptions{DNSName: host, Roots: roots})
		require.NoError(t, err, host)
	}
	_, err = srv.Verify(x509.VerifyOptions{DNSName: "elsewhere.example", Roots: roots})
	require.Error(t, err)
	cli := parse(t, b.Client)
	require.Equal(t, ClientName, cli.Subject.CommonName)
	_, err = cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	_, err = srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.Error(t, err, "the server certificate is no client certificate")

	other, err := Generate()
	require.NoError(t, err)
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(other.CA)
	_, err = srv.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: otherRoots})
	require.Error(t, err, "another CA")
}

// TestMutualTLSHandshake: the configurations make a TLS 1.3 connection
// with the client's identity; a client without a certificate is refused.
func TestMutualTLSHandshake(t *testing.T) {
	b, err := Generate()
	require.NoError(t, err)
	sc, err := b.ServerTLS(true)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	peers := make(chan string, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				peers <- "refused"
			} else {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			_ = c.Close()
		}
	}()
	cc, err := b.ClientTLS(true)
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", ln.Addr().String(), cc)
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), conn.ConnectionState().Version)
	require.Equal(t, ClientName, <-peers)
	_ = conn.Close()

	anon, err := b.ClientTLS(false)
	require.NoError(t, err)
	conn, err = tls.Dial("tcp", ln.Addr().String(), anon)
	if err == nil { // TLS 1.3: the refusal comes with the first read
		_, err = io.ReadAll(conn)
		_ = conn.Close()
	}
	require.Error(t, err)
	require.Equal(t, "refused", <-peers)
}

// TestWriteKeepsKeysPrivate: keys are written for the owner only, and
// existing files are not replaced without force.
func TestWriteKeepsKeysPrivate(t *testing.T) {
	b, err := Generate()
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "certs")
	require.NoError(t, b.Write(dir, false))
	for _, f := range []string{Files.CAKey, Files.ServerKey, Files.ClientKey} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	got, err := os.ReadFile(filepath.Join(dir, Files.CA))
	require.NoError(t, err)
	require.Equal(t, b.CA, got)
	require.ErrorContains(t, b.Write(dir, false), "exists")
	require.NoError(t, b.Write(dir, true))
}
