package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

// printConfig runs serve --print-config with env and args.
func printConfig(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, env, append([]string{"serve", "--print-config"}, args...)...)
}

// TestConfigFilePrecedence: a flag beats its variable, which beats the
// file, which beats the default; --print-config says which won.
func TestConfigFilePrecedence(t *testing.T) {
	file := writeFile(t, "r.toml", `# settings
max-topics      = 500
max-subscribers = 77
default-fsync   = "interval=100ms"
retention       = "2h"
pin-shards      = true
admin-token     = "0123456789abcdef-secret"
`)
	out, errOut, code := printConfig(t, []string{"RATATOSKR_MAX_SUBSCRIBERS=88", "RATATOSKR_MAX_TOPICS=600"},
		"--config", file, "--max-topics", "700")
	require.Equal(t, 0, code, errOut)
	row := func(name, value, source string) {
		t.Helper()
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(name)+`\s+`+regexp.QuoteMeta(value)+`\s+`+regexp.QuoteMeta(source)+`$`, out)
	}
	row("max-topics", "700", "flag")
	row("max-subscribers", "88", "env RATATOSKR_MAX_SUBSCRIBERS")
	row("default-fsync", "interval=100ms", "file "+file+":4")
	row("retention", "2h", "file "+file+":5")
	row("pin-shards", "true", "file "+file+":6")
	row("admin-token", "****cret", "file "+file+":7")
	row("max-message-bytes", "1MiB", "default")
	require.NotContains(t, out, "0123456789abcdef-secret", "the token is never printed")

	// RATATOSKR_RETENTION_MS, the seed's name, ranks with the variables.
	out, _, code = printConfig(t, []string{"RATATOSKR_RETENTION_MS=90000"}, "--config", file)
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^retention\s+1m30s\s+env RATATOSKR_RETENTION_MS$`, out)
}

func TestConfigFileTokenPermissions(t *testing.T) {
	file := writeFile(t, "r.toml", "admin-token = \"0123456789abcdef-secret\"\n")
	_, errOut, code := printConfig(t, nil, "--config", file)
	require.Equal(t, 0, code)
	require.NotContains(t, errOut, "warning", "0600 is private")
	require.NoError(t, os.Chmod(file, 0o644))
	_, errOut, code = printConfig(t, nil, "--config", file)
	require.Equal(t, 0, code)
	require.Contains(t, errOut, "holds admin-token and is readable by others (mode 0644)")
}

// TestConfigFileErrors: every bad setting stops startup with a message
// that names it and says where it came from.
func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		env        []string
		want       []string
	}{
		{"unknown key", "max-topic = 5\nbogus = 1\n", nil,
			[]string{":1: max-topic: unknown setting (did you mean max-topics?)", ":2: bogus: unknown setting"}},
		{"wrong type", "max-topics = \"many\"\n", nil, []string{":1: max-topics: want an integer, got string \"many\""}},
		{"bad duration", "retention = \"soon\"\n", nil, []string{`:1: retention: "soon" is not a duration`}},
		{"not in file", "config = \"other.toml\"\n", nil, []string{":1: config: not allowed in a config file"}},
		{"bad enum", "log-level = \"loud\"\n", nil, []string{"log-level: must be one of debug, info, warn, error"}},
		{"syntax", "max-topics = \n", nil, []string{"r.toml:1:"}},
		{"invalid value from file", "max-message-bytes = 0\n", nil, []string{"r.toml:1: max-message-bytes = 0:", "(MaxMessageBytes)"}},
		{"invalid value from env", "", []string{"RATATOSKR_MAX_PENDING_BYTES=-5"}, []string{"RATATOSKR_MAX_PENDING_BYTES=-5:"}},
		{"bad RETENTION_MS", "", []string{"RATATOSKR_RETENTION_MS=1h"}, []string{`RATATOSKR_RETENTION_MS="1h": not a whole number`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "r.toml", tc.file)
			_, errOut, code := printConfig(t, tc.env, "--config", file, "--data", t.TempDir())
			require.NotEqual(t, 0, code)
			for _, w := range tc.want {
				require.Contains(t, errOut, w)
			}
		})
	}
	_, errOut, code := printConfig(t, nil, "--config", filepath.Join(t.TempDir(), "missing.toml"))
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "config file:")
}

// TestConfigFileStartsBroker: the file's settings reach the running broker.
func TestConfigFileStartsBroker(t *testing.T) {
	file := writeFile(t, "r.toml", "max-topics = 1\naddr = \"127.0.0.1:0\"\nhttp-addr = \"\"\n")
	s := startServer(t, nil, "--config", file)
	_, errOut, code := runCLI(t, nil, "topic", "create", "a", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	_, errOut, code = runCLI(t, nil, "topic", "create", "b", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "too many topics")
}

func TestTopicUpdateCommand(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	_, errOut, code := runCLI(t, nil, "topic", "create", "orders", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	out, errOut, code := runCLI(t, nil, "topic", "update", "orders", "--retention", "2h", "--fsync", "always",
		"--max-deliveries", "4", "--dead-letter-topic", "orders-dead", "--server", s.addr)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "updated topic orders")
	require.Contains(t, out, "retention = 2h\n")
	require.Contains(t, out, "fsync = always")
	require.Contains(t, out, "max-deliveries = 4")
	require.Contains(t, out, "dead-letter-topic = orders-dead")

	_, errOut, code = runCLI(t, nil, "topic", "update", "orders", "--server", s.addr)
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "nothing to change")
	_, errOut, code = runCLI(t, nil, "topic", "update", "orders", "--fsync", "sometimes", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "fsync")
	_, errOut, code = runCLI(t, nil, "topic", "update", "nope", "--retention", "1h", "--server", s.addr)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "unknown topic")
}

// TestJSONLogs: --log-format json writes one JSON object per line, and
// --log-level filters by level.
func TestJSONLogs(t *testing.T) {
	lines := func(level string) []map[string]any {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		httpAddr := ln.Addr().String()
		require.NoError(t, ln.Close())
		cmd := exec.Command(binary, "serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0", "--http-addr", httpAddr,
			"--log-format", "json", "--log-level", level)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + httpAddr + "/readyz")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 10*time.Second, 10*time.Millisecond, "serve became ready")
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, cmd.Wait())
		var out []map[string]any
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var m map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "not JSON: %q", sc.Text())
			out = append(out, m)
		}
		return out
	}
	debug := lines("debug")
	var listening map[string]any
	sawDebug := false
	for _, m := range debug {
		sawDebug = sawDebug || m["level"] == "DEBUG"
		if m["msg"] == "ratatoskr listening" {
			listening = m
		}
	}
	require.True(t, sawDebug, "debug lines at --log-level debug")
	require.NotNil(t, listening)
	require.Equal(t, "INFO", listening["level"])
	require.Contains(t, listening, "addr")
	require.Contains(t, listening, "time")

	for _, m := range lines("warn") {
		require.Contains(t, []any{"WARN", "ERROR"}, m["level"], "only warnings and errors at --log-level warn: %v", m)
	}
}
