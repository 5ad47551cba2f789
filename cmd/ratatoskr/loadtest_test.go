package main

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLoadtestSize(t *testing.T) {
	for in, want := range map[string]loadtestSize{
		"128": 128, "128B": 128, "4KiB": 4096, "1.5MiB": 3 << 19, "1GiB": 1 << 30, "2kB": 2000, "1MB": 1e6, "20 B": 20,
	} {
		got, err := parseLoadtestSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "B", "KiB", "-1B", "4XB", "1e20", "3GiB", "Inf"} {
		_, err := parseLoadtestSize(in)
		require.Error(t, err, in)
	}
}

// TestLoadtestCommand: sizes take units, latencies print in the unit that
// fits, and an existing topic with other settings is refused with the
// differences named.
func TestLoadtestCommand(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	out, errOut, code := runCLI(t, nil, "loadtest", "--server", s.addr, "--topic", "lt", "--count", "2000",
		"--size", "1KiB", "--json")
	require.Zero(t, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Equal(t, 1024.0, res["size"])
	require.Equal(t, "lt", res["topic"])
	require.Equal(t, 2000.0, res["delivered"])

	out, errOut, code = runCLI(t, nil, "loadtest", "--server", s.addr, "--topic", "lt", "--rate", "2000", "--count", "1000")
	require.Zero(t, code, errOut)
	require.Regexp(t, regexp.MustCompile(`latency p50 / p90 / p99 +\d+(\.\d)?(µs|ms|s) / `), out)
	require.Regexp(t, regexp.MustCompile(`producer lateness p50 / p99 / max +\d+(\.\d)?(µs|ms|s) / `), out)
	require.Contains(t, out, "lt: memory, 1 partition")

	_, errOut, code = runCLI(t, nil, "loadtest", "--server", s.addr, "--topic", "lt", "--count", "100", "--durable")
	require.Equal(t, exitFailed, code)
	require.Contains(t, errOut, "lt has storage memory (asked disk)")
	require.Contains(t, errOut, "--recreate")
	require.NotContains(t, errOut, "ratatoskr: ratatoskr:")

	_, errOut, code = runCLI(t, nil, "loadtest", "--server", s.addr, "--size", "4XB")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, `size "4XB"`)
}
