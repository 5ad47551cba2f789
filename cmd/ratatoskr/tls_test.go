package main

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
)

// tlsFront terminates TLS with the server certificate in dir in front of
// addr, as a load balancer would, and returns its address.
func tlsFront(t *testing.T, dir, addr string) string {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	require.NoError(t, err)
	f, err := devcert.NewFront(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f.Addr()
}

// TestCertDevAndTLSFlags: `cert dev` writes a CA, server and client
// certificates (keys for the owner only) and will not overwrite them
// without --force; client commands reach a broker over TLS with --tls-ca
// (or RATATOSKR_TLS_CA), fail clearly without it, and refuse a
// certificate without its key as a usage error.
func TestCertDevAndTLSFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	_, errOut, code := runCLI(t, nil, "cert", "dev", "--dir", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "--tls-ca "+filepath.Join(dir, "ca.pem"))
	for _, f := range []string{"ca-key.pem", "server-key.pem", "client-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	_, errOut, code = runCLI(t, nil, "cert", "dev", "--dir", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "exists; --force replaces it")
	_, errOut, code = runCLI(t, nil, "cert", "dev", "--dir", dir, "--force", "--host", "broker.example")
	require.Equal(t, 0, code, errOut)

	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	front := tlsFront(t, dir, s.addr)
	ca := filepath.Join(dir, "ca.pem")
	_, errOut, code = runCLI(t, nil, "pub", "secure", "over", "tls", "--server", front, "--tls-ca", ca)
	require.Equal(t, 0, code, errOut)
	out, errOut, code := runCLIEnv(t, []string{"RATATOSKR_TLS_CA=" + ca}, "sub", "secure", "--from", "earliest", "-n", "2", "--server", front)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "over\ntls\n", out)

	_, errOut, code = runCLI(t, nil, "topic", "list", "--server", front)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "a TLS port?")
	_, errOut, code = runCLI(t, nil, "topic", "list", "--server", front, "--tls")
	require.Equal(t, 1, code, "the system's CAs do not know the development CA")
	require.Contains(t, errOut, "certificate")
	_, errOut, code = runCLI(t, nil, "topic", "list", "--server", front, "--tls-ca", ca,
		"--tls-cert", filepath.Join(dir, "client.pem"))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "--tls-cert and --tls-key go together")
}

// The broker's own TLS listener, with mutual TLS and HTTPS, through the
// commands; and the startup errors of a TLS configuration.
func TestServeTLSListener(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	_, errOut, code := runCLI(t, nil, "cert", "dev", "--dir", dir)
	require.Equal(t, 0, code, errOut)
	file := func(name string) string { return filepath.Join(dir, name) }

	_, errOut, code = runCLI(t, nil, "serve", "--data", t.TempDir(), "--addr", "off", "--tls-addr", "127.0.0.1:0", "--http-addr", "")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "--tls-addr=127.0.0.1:0: needs a certificate and its key")
	_, errOut, code = runCLI(t, nil, "serve", "--data", t.TempDir(), "--tls-addr", "127.0.0.1:0", "--http-addr", "",
		"--tls-cert", file("ca-key.pem"), "--tls-key", file("server-key.pem"))
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "ca-key.pem")

	s := startServer(t, []string{"RATATOSKR_SERVER_TLS_CERT=" + file("server.pem"), "RATATOSKR_SERVER_TLS_KEY=" + file("server-key.pem")},
		"--addr", "off", "--tls-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--tls-client-ca", file("ca.pem"))
	require.Equal(t, "off", s.addr)
	client := []string{"--server", s.tlsAddr, "--tls-ca", file("ca.pem"), "--tls-cert", file("client.pem"), "--tls-key", file("client-key.pem")}
	_, errOut, code = runCLI(t, nil, append([]string{"pub", "secure", "one", "two"}, client...)...)
	require.Equal(t, 0, code, errOut)
	out, errOut, code := runCLI(t, nil, append([]string{"sub", "secure", "--from", "earliest", "-n", "2"}, client...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "one\ntwo\n", out)
	// Without a client certificate the broker refuses the handshake.
	_, errOut, code = runCLI(t, nil, "topic", "list", "--server", s.tlsAddr, "--tls-ca", file("ca.pem"))
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "needs a client certificate")
	// Without TLS on the TLS port.
	_, errOut, code = runCLI(t, nil, "topic", "list", "--server", s.tlsAddr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "a TLS port?")

	out, errOut, code = runCLI(t, nil, "dashboard-url", "--https", "--http-addr", s.httpAddr, "--admin-token", "tok")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "https://"+s.httpAddr+"/#token=tok\n", out)
}
