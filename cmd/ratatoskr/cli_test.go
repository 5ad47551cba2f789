package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPubReportsWhatWasStored: pub's summary names the count, partitions
// and offsets; --quiet silences it; --file sends one message; --header
// repeats; a failure says how many were acknowledged.
func TestPubReportsWhatWasStored(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "", "--no-auto-create-topics")
	srv := []string{"--server", s.addr}
	_, errOut, code := runCLI(t, nil, append([]string{"topic", "create", "p", "--partitions", "2"}, srv...)...)
	require.Equal(t, 0, code, errOut)

	out, errOut, code := runCLI(t, nil, append([]string{"pub", "p", "a", "b", "c", "--partition", "1"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Empty(t, out)
	require.Equal(t, "published 3 messages to p: partition 1, offsets 0-2\n", errOut)
	_, errOut, code = runCLI(t, strings.NewReader("x\ny\n"), append([]string{"pub", "p", "--partition", "1"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "published 2 messages to p: partition 1, offsets 3-4\n", errOut)
	_, errOut, code = runCLI(t, nil, append([]string{"pub", "p", "one", "--partition", "0", "-q"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Empty(t, errOut)

	file := filepath.Join(t.TempDir(), "doc.txt")
	require.NoError(t, os.WriteFile(file, []byte("line 1\nline 2\n"), 0o600))
	_, errOut, code = runCLI(t, nil, append([]string{"pub", "p", "--file", file, "--partition", "0", "-H", "a=1",
		"--header", "b=x=y,z"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "published 1 message to p: partition 0, offset 1\n", errOut)
	out, errOut, code = runCLIFor(t, 30*time.Second, append([]string{"sub", "p", "--partition", "0", "--from", "1",
		"-n", "1", "-o", "json"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m))
	require.Equal(t, "line 1\nline 2\n", m["value"], "the whole file, newlines and all")
	require.Equal(t, []any{map[string]any{"key": "a", "value": "1"}, map[string]any{"key": "b", "value": "x=y,z"}}, m["headers"])

	_, errOut, code = runCLI(t, nil, append([]string{"pub", "p", "x", "--partition", "7"}, srv...)...)
	require.Equal(t, 1, code)
	require.Equal(t, "ratatoskr: publishing to p: unknown partition: partition 7 of topic p with 2 partitions; "+
		"0 of 1 message acknowledged\n", errOut)

	for _, args := range [][]string{{"pub", "p", "x", "--file", file}, {"pub", "p", "-H", "novalue", "x"}} {
		_, errOut, code = runCLI(t, nil, append(args, srv...)...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
	}
}

// TestPubInterrupted: Ctrl-C stops pub with exit status 130 and an
// account of what was acknowledged before it.
func TestPubInterrupted(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer func() { _ = pr.Close() }()
	cmd := exec.Command(binary, "pub", "intr", "--server", s.addr)
	cmd.Stdin = pr
	var errb bytes.Buffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	_, err = pw.WriteString("first\nsecond\n")
	require.NoError(t, err)
	// Wait until both are stored, then interrupt while stdin stays open.
	require.Eventually(t, func() bool {
		out, _, _ := runCLI(t, nil, "topic", "describe", "intr", "--server", s.addr)
		return regexp.MustCompile(`(?m)^0\s+0\s+2\s`).MatchString(out)
	}, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err = cmd.Wait()
	_ = pw.Close()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 130, ee.ExitCode(), errb.String())
	require.Equal(t, "ratatoskr: interrupted: 2 of 2 messages acknowledged: partition 0, offsets 0-1\n", errb.String())
}

// TestSubFormatsAndStarts: --format and --output json show what the
// broker stored; --from takes -N per partition, a duration and a date.
func TestSubFormatsAndStarts(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	srv := []string{"--server", s.addr}
	_, errOut, code := runCLI(t, nil, append([]string{"topic", "create", "f", "--partitions", "2"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	for p, vals := range [][]string{{"a0", "a1", "a2", "a3"}, {"b0", "b1", "b2"}} {
		args := append([]string{"pub", "f", "--partition", []string{"0", "1"}[p], "--key", "k", "-H", "h=v"}, vals...)
		_, errOut, code = runCLI(t, nil, append(args, srv...)...)
		require.Equal(t, 0, code, errOut)
	}
	bin := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.WriteFile(bin, []byte{0xff, 0xfe}, 0o600))
	_, errOut, code = runCLI(t, nil, append([]string{"pub", "f", "--partition", "1", "--file", bin}, srv...)...)
	require.Equal(t, 0, code, errOut)

	sub := func(args ...string) []string {
		t.Helper()
		out, errOut, code := runCLIFor(t, 30*time.Second, append(append([]string{"sub", "f"}, args...), srv...)...)
		require.Equal(t, 0, code, errOut)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		slices.Sort(lines)
		return lines
	}
	// -2: the last two of each partition; --format with every verb.
	got := sub("--from", "-2", "-n", "4", "--format", `%p/%o %k: %v\t[%h] %t %S %%`)
	require.Equal(t, []string{"0/2 k: a2\t[h=v] f 2 %", "0/3 k: a3\t[h=v] f 2 %", "1/2 k: b2\t[h=v] f 2 %",
		"1/3 : \xff\xfe\t[] f 2 %"}, got)
	got = sub("--from=-1", "--partition", "0", "-n", "1", "--format", "%T|%U")
	ts, ms, _ := strings.Cut(got[0], "|")
	when, err := time.Parse(time.RFC3339Nano, ts)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), when, time.Minute)
	require.Regexp(t, `^\d{13}$`, ms)

	// JSON: UTF-8 values as strings, other bytes as base64.
	got = sub("--from", "-1", "--partition", "1", "-n", "1", "-o", "json")
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(got[0]), &m))
	require.Equal(t, base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}), m["value_base64"])
	require.NotContains(t, m, "value")
	require.Equal(t, float64(3), m["offset"])

	// A duration and a date before everything: all of it.
	require.Len(t, sub("--from", "1h", "-n", "8"), 8)
	require.Len(t, sub("--from", time.Now().AddDate(0, 0, -1).Format(time.DateOnly), "-n", "8"), 8)

	for _, bad := range [][]string{{"--from", "soon"}, {"--format", "%q"}, {"--format", `\x`},
		{"--format", "%v", "-o", "json"}, {"--from", "-3", "--group", "g"}, {"--from", "-1h"}} {
		_, errOut, code := runCLI(t, nil, append(append([]string{"sub", "f"}, bad...), srv...)...)
		require.Equal(t, 2, code, "%v: %s", bad, errOut)
	}
}

// TestTopicEffectiveConfigAndJSON: describe shows each setting as it
// applies, defaults marked; 0 means the same in create and update; list
// and describe print JSON.
func TestTopicEffectiveConfigAndJSON(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "", "--retention-bytes", "1GiB")
	srv := []string{"--server", s.addr}
	_, errOut, code := runCLI(t, nil, append([]string{"topic", "create", "z", "--retention", "0", "--retention-bytes", "0"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	_, errOut, code = runCLI(t, nil, append([]string{"topic", "create", "u", "--retention", "7d", "--retention-bytes", "64MiB",
		"--max-deliveries", "3", "--max-subscribers", "9"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	out, errOut, code := runCLI(t, nil, append([]string{"topic", "update", "u", "--retention", "0", "--retention-bytes", "0",
		"--max-deliveries", "0", "--max-subscribers", "0"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	created, _, code := runCLI(t, nil, append([]string{"topic", "describe", "z"}, srv...)...)
	require.Equal(t, 0, code)
	for _, text := range []string{created, out} {
		require.Contains(t, text, "  retention = 0 (forever)\n")
		require.Contains(t, text, "  retention-bytes = 0 (no bound)\n")
		require.Contains(t, text, "  max-deliveries = 5 (default)\n")
		require.Contains(t, text, "  max-subscribers = 10000\n")
		require.Regexp(t, `  dead-letter-topic = [zu]\.dlq \(default\)\n`, text)
	}

	out, errOut, code = runCLI(t, nil, append([]string{"topic", "describe", "u", "-o", "json"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	var doc struct {
		Name       string         `json:"name"`
		Config     map[string]any `json:"config"`
		Defaults   []string       `json:"defaults"`
		Partitions []struct {
			ID    int    `json:"id"`
			State string `json:"state"`
		} `json:"partitions"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Equal(t, "u", doc.Name)
	require.Equal(t, map[string]any{"dead_letter_topic": "u.dlq", "fsync": "always", "max_deliveries": float64(5),
		"max_subscribers": float64(10000), "retention": "0s", "retention_bytes": float64(0), "storage": "disk",
		"encryption": "off"}, doc.Config)
	require.Equal(t, []string{"dead_letter_topic", "max_deliveries"}, doc.Defaults)
	require.Len(t, doc.Partitions, 1)
	require.Equal(t, "online", doc.Partitions[0].State)

	out, errOut, code = runCLI(t, nil, append([]string{"topic", "list", "--output", "json"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Equal(t, []map[string]any{{"name": "u", "partitions": float64(1)}, {"name": "z", "partitions": float64(1)}}, list)

	_, errOut, code = runCLI(t, nil, append([]string{"topic", "create", "k", "--keep-forever", "--retention", "1h"}, srv...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "contradict")
}

// TestHumanUnitsInFlagsAndEnv: sizes and durations take units in flags
// and variables alike, and help shows the defaults in them.
func TestHumanUnitsInFlagsAndEnv(t *testing.T) {
	out, errOut, code := printConfig(t, []string{"RATATOSKR_SEGMENT_BYTES=1GiB", "RATATOSKR_GROUP_RETENTION=2d"},
		"--max-pending-bytes", "32MiB", "--retention", "1h30m", "--catchup-bytes", "1MiB", "--data", t.TempDir())
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^catchup-bytes\s+1MiB\s+flag$`, out)
	require.Regexp(t, `(?m)^segment-bytes\s+1GiB\s+env RATATOSKR_SEGMENT_BYTES$`, out)
	require.Regexp(t, `(?m)^group-retention\s+2d\s+env RATATOSKR_GROUP_RETENTION$`, out)
	require.Regexp(t, `(?m)^max-pending-bytes\s+32MiB\s+flag$`, out)
	require.Regexp(t, `(?m)^retention\s+1h30m\s+flag$`, out)
	file := writeFile(t, "r.toml", "cache-bytes = \"512MiB\"\nmemory-topic-bytes = 1048576\nmax-fetch-wait = \"1d\"\n"+
		"catchup-bytes = \"0\"\n")
	out, errOut, code = printConfig(t, nil, "--config", file, "--data", t.TempDir())
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^cache-bytes\s+512MiB\s+file `, out)
	require.Regexp(t, `(?m)^memory-topic-bytes\s+1MiB\s+file `, out)
	require.Regexp(t, `(?m)^max-fetch-wait\s+1d\s+file `, out)
	require.Regexp(t, `(?m)^catchup-bytes\s+0\s+file `, out)

	_, errOut, code = printConfig(t, []string{"RATATOSKR_CACHE_BYTES=lots"}, "--data", t.TempDir())
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `size "lots"`)
	_, errOut, code = printConfig(t, nil, "--shutdown-timeout", "5", "--data", t.TempDir())
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `duration "5"`)

	help, _, code := runCLI(t, nil, "serve", "--help")
	require.Equal(t, 0, code)
	for _, d := range []string{"--max-message-bytes=1MiB", "--max-inflight-bytes=1GiB", "--group-retention=7d",
		"--segment-bytes=128MiB", "--max-ack-delay=250ms"} {
		require.Contains(t, help, d)
	}
}

// TestGroupResetDryRunAndPartitions: --dry-run prints each partition's
// offset as it would become and moves nothing; --to takes per-partition
// targets and -N; group list and describe print JSON.
func TestGroupResetDryRunAndPartitions(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	logsOnFailure(t, s)
	srv := []string{"--server", s.addr}
	_, errOut, code := runCLI(t, nil, append([]string{"topic", "create", "r", "--partitions", "3"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	for p := range 3 {
		args := []string{"pub", "r", "--partition", strconv.Itoa(p), "-q"}
		for i := range 10 {
			args = append(args, fmt.Sprint(i))
		}
		_, errOut, code = runCLI(t, nil, append(args, srv...)...)
		require.Equal(t, 0, code, errOut)
	}
	_, errOut, code = runCLIFor(t, 60*time.Second, append([]string{"sub", "r", "--group", "rg", "--from", "earliest",
		"-n", "30"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	committed := func() map[int]string {
		out, errOut, code := runCLI(t, nil, append([]string{"group", "describe", "rg"}, srv...)...)
		require.Equal(t, 0, code, errOut)
		rows := describeRows(t, out)
		got := map[int]string{}
		for p, r := range rows {
			got[p] = r[1]
		}
		return got
	}
	require.Eventually(t, func() bool {
		return maps.Equal(committed(), map[int]string{0: "10", 1: "10", 2: "10"})
	}, 20*time.Second, 50*time.Millisecond)

	out, errOut, code := runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", "0=4,2=-3", "--dry-run"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^0\s+10\s+4\s+10$`, out)
	require.Regexp(t, `(?m)^1\s+10\s+unchanged\s+10$`, out)
	require.Regexp(t, `(?m)^2\s+10\s+7\s+10$`, out)
	require.Contains(t, out, "nothing was changed")
	require.Equal(t, map[int]string{0: "10", 1: "10", 2: "10"}, committed(), "a dry run moves nothing")

	out, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", "earliest", "--dry-run"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 3, strings.Count(out, "  0  "), out)
	_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", "0=11", "--dry-run"}, srv...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "partition 0: offset out of range")

	_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", "0=4,2=-3"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, map[int]string{0: "4", 1: "10", 2: "7"}, committed())
	_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", "-2"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, map[int]string{0: "8", 1: "8", 2: "8"}, committed())

	for _, bad := range []string{"0=4,0=5", "x=1", "1=soon"} {
		_, errOut, code = runCLI(t, nil, append([]string{"group", "reset", "rg", "--to", bad}, srv...)...)
		require.Equal(t, 2, code, "%s: %s", bad, errOut)
	}

	out, errOut, code = runCLI(t, nil, append([]string{"group", "list", "-o", "json"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Equal(t, []map[string]any{{"group": "rg", "topic": "r", "members": float64(0)}}, list)
	out, errOut, code = runCLI(t, nil, append([]string{"group", "describe", "rg", "-o", "json"}, srv...)...)
	require.Equal(t, 0, code, errOut)
	var g map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &g))
	require.Equal(t, "offset", g["mode"])
	require.Equal(t, float64(6), g["lag"])
	p0 := g["partitions"].([]any)[0].(map[string]any)
	require.Equal(t, map[string]any{"partition": float64(0), "owner": nil, "committed": float64(8), "end": float64(10),
		"lag": float64(2), "pending": nil}, p0)
}
