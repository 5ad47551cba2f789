package engine

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// scrapeBusy returns /metrics of a broker with every kind of family in
// use: two shards, a topic's partitions, a plugin, a consumer group with a
// commit (for the lag), and an error sent to a client.
func scrapeBusy(t *testing.T) string {
	t.Helper()
	// With a TLS listener too, so that its families are there.
	files := writeDevCerts(t)
	e := startBrokerWith(t, func(c *Config) { c.Shards = 2; withTLS(c, files, false); c.HTTPTLS = false }, WithPlugin(&recorder{name: "rec"}))
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 2}))
	var handled atomic.Int64
	g := joinGroup(t, e, client.GroupConfig{Group: "billing", Topic: "orders", Start: client.Earliest,
		AutoCommitInterval: -1, Handler: func(*client.GroupMessage) error { handled.Add(1); return nil }})
	waitAssigned(t, []int{2}, g)
	publishN(t, c, "orders", 0, 10)
	require.Eventually(t, func() bool { return handled.Load() == 10 }, 30*time.Second, time.Millisecond)
	require.NoError(t, g.Commit(ctx))
	_, err := c.DescribeTopic(ctx, "no-such-topic")
	require.Error(t, err)
	return scrapeBody(t, e)
}

// familyMeta is what a scrape says of one family.
type familyMeta struct {
	help, typ string
	samples   int
}

// parseMetadata reads a scrape and checks its metadata: every family has
// one non-empty HELP line and one TYPE line, before its samples, and every
// sample belongs to the family announced last (a histogram's _bucket,
// _sum and _count series, a summary's _sum and _count to theirs).
func parseMetadata(t *testing.T, body string) map[string]*familyMeta {
	t.Helper()
	fams := map[string]*familyMeta{}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			require.NotContains(t, fams, name, "a second HELP for %s", name)
			require.NotEmpty(t, strings.TrimSpace(help), "%s has an empty HELP", name)
			fams[name] = &familyMeta{help: help}
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			f := fams[name]
			require.NotNil(t, f, "TYPE of %s without a HELP before it", name)
			require.Empty(t, f.typ, "a second TYPE for %s", name)
			require.Contains(t, []string{"counter", "gauge", "histogram", "summary", "untyped"}, typ, name)
			f.typ, current = typ, name
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			series := line[:strings.IndexAny(line, "{ ")]
			require.True(t, belongsTo(series, current, fams[current]),
				"series %s has no metadata of its own (the family announced last is %q)", series, current)
			fams[current].samples++
		}
	}
	require.NoError(t, sc.Err())
	return fams
}

func belongsTo(series, family string, f *familyMeta) bool {
	if f == nil {
		return false
	}
	if series == family {
		return true
	}
	switch f.typ {
	case "histogram":
		return slices.Contains([]string{family + "_bucket", family + "_sum", family + "_count"}, series)
	case "summary":
		return slices.Contains([]string{family + "_sum", family + "_count"}, series)
	}
	return false
}

// documented lists the ratatoskr_ metric names in docs/METRICS.md's
// reference tables.
func documented(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/METRICS.md")
	require.NoError(t, err)
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(ratatoskr_[a-z_]+)` \\|").FindAllSubmatch(doc, -1) {
		names = append(names, string(m[1]))
	}
	slices.Sort(names)
	return names
}

// TestMetricsMetadata: every family on /metrics has a useful HELP and a
// TYPE line, the names that mark a type have it (_total counters, _seconds
// and _bytes units), and docs/METRICS.md documents exactly the broker's
// families.
func TestMetricsMetadata(t *testing.T) {
	fams := parseMetadata(t, scrapeBusy(t))
	var ours []string
	for name, f := range fams {
		if strings.HasSuffix(name, "_total") {
			require.Equal(t, "counter", f.typ, "%s ends in _total", name)
		}
		if f.typ == "counter" {
			require.True(t, strings.HasSuffix(name, "_total"), "counter %s does not end in _total", name)
		}
		if strings.HasPrefix(name, "ratatoskr_") {
			ours = append(ours, name)
			require.NotEqual(t, "untyped", f.typ, name)
		}
	}
	slices.Sort(ours)
	require.Equal(t, documented(t), ours, "docs/METRICS.md and /metrics list the same families")
	for _, name := range []string{"ratatoskr_errors_total", "ratatoskr_consumer_lag_messages",
		"ratatoskr_plugin_queue_length", "ratatoskr_publish_ack_seconds", "go_gc_duration_seconds",
		"go_goroutines", "process_cpu_seconds_total", "process_open_fds"} {
		require.Positive(t, fams[name].samples, "%s has samples in this scrape", name)
	}
	require.Equal(t, "histogram", fams["ratatoskr_fsync_seconds"].typ)
	require.Equal(t, "summary", fams["go_gc_duration_seconds"].typ)
	require.Equal(t, "counter", fams["process_io_read_bytes_total"].typ, "the library calls it a gauge")
}

// findPromtool returns the path of promtool. The test needs it and fails
// without it, as the dashboard test does without Chromium: `make test`
// installs Debian's prometheus package, which has it.
func findPromtool(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package " +
			"(apt-get install prometheus, or `make promtool`; `make test` does it)")
	}
	return p
}

// TestMetricsPromtool: a live broker's /metrics passes `promtool check
// metrics`, the Prometheus project's parser and linter (metadata, names,
// units, types).
func TestMetricsPromtool(t *testing.T) {
	path := findPromtool(t)
	body := scrapeBusy(t)
	cmd := exec.CommandContext(testCtx(t), path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "promtool's findings")
}
