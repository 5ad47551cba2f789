package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The security commands against a broker with authentication on: a
// tenant, users, rules, and client commands that authenticate.
func TestUserACLAndTenantCommands(t *testing.T) {
	data := t.TempDir()
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--auth", "on")
	admin := []string{"--http-addr", s.httpAddr, "--data", data}
	// The developer's own credentials in the environment stay out of it.
	clean := []string{"RATATOSKR_USER=", "RATATOSKR_PASSWORD=", "RATATOSKR_TOKEN=", "RATATOSKR_ADMIN_TOKEN="}
	run := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		if stdin == "" {
			return runCLIWith(t, nil, clean, args...)
		}
		return runCLIWith(t, strings.NewReader(stdin), clean, args...)
	}
	out, errOut, code := run("", append([]string{"tenant", "add", "acme", "--max-topics", "3"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "tenant acme created")

	_, errOut, code = run("", append([]string{"user", "add", "alice"}, admin...)...)
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "--password-stdin")
	out, errOut, code = run("alice-password\n", append([]string{"user", "add", "alice", "--password-stdin"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "user alice created (user)")
	_, errOut, code = run("x\n", append([]string{"user", "add", "bob", "--password-stdin"}, admin...)...)
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "at least 8")

	out, errOut, code = run("", append([]string{"user", "list"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "alice")
	require.NotContains(t, out, "stored_key")

	// No rule yet: alice may not publish.
	_, errOut, code = runCLIEnv(t, []string{"RATATOSKR_PASSWORD=alice-password"}, "pub", "--server", s.addr, "--user", "alice", "news", "hello")
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "not authorized")
	_, errOut, code = runCLIEnv(t, []string{"RATATOSKR_PASSWORD=wrong-password"}, "pub", "--server", s.addr, "--user", "alice", "news", "hello")
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "authentication failed")
	_, errOut, code = run("", "pub", "--server", s.addr, "news", "hello")
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "authentication required")

	out, errOut, code = run("", append([]string{"acl", "add", "--principal", "alice", "--topic", "news", "--ops", "publish,create"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "allow alice publish,create on topic news")
	id := strings.Fields(out)[1]
	id = strings.TrimSuffix(id, ":")
	_, errOut, code = runCLIEnv(t, []string{"RATATOSKR_PASSWORD=alice-password"}, "pub", "--server", s.addr, "--user", "alice", "news", "hello")
	require.Equal(t, 0, code, errOut)

	out, errOut, code = run("", append([]string{"acl", "list"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, id)
	_, errOut, code = run("", append([]string{"acl", "add", "--principal", "alice", "--ops", "publish"}, admin...)...)
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "name one resource")
	_, errOut, code = run("", append([]string{"acl", "add", "--principal", "alice", "--topic", "x", "--ops", "explode"}, admin...)...)
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "unknown operation")
	_, errOut, code = run("", append([]string{"acl", "delete", id}, admin...)...)
	require.Equal(t, 0, code, errOut)

	out, errOut, code = run("new-alice-password\n", append([]string{"user", "passwd", "alice", "--password-stdin"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "password of alice changed")
	_, errOut, code = run("", append([]string{"user", "delete", "alice"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	_, errOut, code = run("", append([]string{"user", "delete", "alice"}, admin...)...)
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "no such user")

	out, errOut, code = run("", append([]string{"tenant", "list"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "acme")
	_, errOut, code = run("", append([]string{"tenant", "delete", "acme"}, admin...)...)
	require.Equal(t, 0, code, errOut)

	_, errOut, code = run("", "user", "list", "--http-addr", s.httpAddr, "--admin-token", "wrong")
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "unauthorized")
}

// A broker with authentication off refuses a non-loopback address unless
// anonymous access is asked for.
func TestServeRefusesAnonymousBeyondLoopback(t *testing.T) {
	_, errOut, code := runCLI(t, nil, "serve", "--data", t.TempDir(), "--addr", "0.0.0.0:0", "--http-addr", "")
	require.Equal(t, exitFailed, code, errOut) // as every invalid setting
	require.Contains(t, errOut, "--allow-anonymous")
	require.Contains(t, errOut, "--auth on")
}

// Over TLS: the security commands reach an HTTPS listener with --tls-ca,
// and a client command authenticates by its certificate.
func TestSecurityCommandsOverTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	_, errOut, code := runCLI(t, nil, "cert", "dev", "--dir", dir)
	require.Equal(t, 0, code, errOut)
	file := func(name string) string { return filepath.Join(dir, name) }
	data := t.TempDir()
	s := startServerIn(t, data, []string{"RATATOSKR_SERVER_TLS_CERT=" + file("server.pem"), "RATATOSKR_SERVER_TLS_KEY=" + file("server-key.pem")},
		"--addr", "off", "--tls-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--tls-client-ca", file("ca.pem"), "--auth", "on")
	clean := []string{"RATATOSKR_USER=", "RATATOSKR_PASSWORD=", "RATATOSKR_TOKEN=", "RATATOSKR_ADMIN_TOKEN="}
	admin := []string{"--http-addr", s.httpAddr, "--data", data, "--tls-ca", file("ca.pem")}
	out, errOut, code := runCLIWith(t, nil, clean, append([]string{"acl", "add", "--principal", "ratatoskr-dev-client",
		"--topic", "secure", "--ops", "publish,create"}, admin...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "allow ratatoskr-dev-client publish,create on topic secure")
	_, errOut, code = runCLIWith(t, nil, clean, "user", "list", "--http-addr", s.httpAddr, "--data", data)
	require.Equal(t, exitFailed, code, "plain HTTP to an HTTPS listener")
	require.NotEmpty(t, errOut)

	cert := []string{"--server", s.tlsAddr, "--tls-ca", file("ca.pem"), "--tls-cert", file("client.pem"), "--tls-key", file("client-key.pem")}
	_, errOut, code = runCLIWith(t, nil, clean, append([]string{"pub", "secure", "by-certificate"}, cert...)...)
	require.Equal(t, 0, code, errOut)
	_, errOut, code = runCLIWith(t, nil, clean, append([]string{"pub", "other", "x"}, cert...)...)
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "not authorized")
}
