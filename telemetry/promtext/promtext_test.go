package promtext

import (
	"bytes"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"
)

func TestFamilyWrites(t *testing.T) {
	var b bytes.Buffer
	Family{Name: "x_total", Type: Counter, Help: "Things done."}.WriteUint(&b, 7)
	Family{Name: "y_seconds", Type: Gauge, Help: `Time; a \ and a` + "\nnewline."}.WriteFloat(&b, 0.25)
	f := Family{Name: "z", Type: Gauge, Help: `Per "topic".`}
	f.WriteHeader(&b)
	f.WriteSample(&b, `{topic=`+Label("a\"b\\c\nd")+`}`, "1")
	f.WriteSample(&b, `{topic=`+Label("plain")+`}`, "2")
	require.Equal(t, `# HELP x_total Things done.
# TYPE x_total counter
x_total 7
# HELP y_seconds Time; a \\ and a\nnewline.
# TYPE y_seconds gauge
y_seconds 0.25
# HELP z Per "topic".
# TYPE z gauge
z{topic="a\"b\\c\nd"} 1
z{topic="plain"} 2
`, b.String())
}

func TestFormatFloat(t *testing.T) {
	require.Equal(t, "1e+21", FormatFloat(1e21))
	require.Equal(t, "0.1", FormatFloat(0.1))
	require.Equal(t, "3", FormatFloat(3))
}

var annotateFamilies = map[string]Family{
	"a_total":   {Name: "a_total", Type: Counter, Help: "As."},
	"h_seconds": {Name: "h_seconds", Type: Histogram, Help: "Hs."},
	"s_seconds": {Name: "s_seconds", Type: Summary, Help: "Ss."},
	"n_count":   {Name: "n_count", Type: Untyped, Help: "Ns."},
}

func TestAnnotate(t *testing.T) {
	in := `# HELP a_total
# TYPE a_total counter
a_total{k="1"} 1
a_total{k="2"} 2

h_seconds_bucket{le="1"} 1
h_seconds_bucket{le="+Inf"} 2
h_seconds_sum 3
h_seconds_count 2
s_seconds{quantile="0.5"} 1
s_seconds_sum 4
s_seconds_count 2
s_seconds_bucket{le="1"} 1
n_count 5
stranger{x="y"} 6
stranger{x="z"} 7`
	var b bytes.Buffer
	unknown := Annotate(&b, []byte(in), annotateFamilies)
	require.Equal(t, []string{"s_seconds_bucket", "stranger"}, unknown,
		"a summary has no buckets; a family not in the table is reported once")
	require.Equal(t, `# HELP a_total As.
# TYPE a_total counter
a_total{k="1"} 1
a_total{k="2"} 2
# HELP h_seconds Hs.
# TYPE h_seconds histogram
h_seconds_bucket{le="1"} 1
h_seconds_bucket{le="+Inf"} 2
h_seconds_sum 3
h_seconds_count 2
# HELP s_seconds Ss.
# TYPE s_seconds summary
s_seconds{quantile="0.5"} 1
s_seconds_sum 4
s_seconds_count 2
s_seconds_bucket{le="1"} 1
# HELP n_count Ns.
# TYPE n_count untyped
n_count 5
stranger{x="y"} 6
stranger{x="z"} 7
`, b.String())
}

// TestAnnotateIgnoresLibraryMetadata: whether or not the process has
// turned on VictoriaMetrics' own metadata, Annotate writes the same
// text, with one HELP and one TYPE per family.
func TestAnnotateIgnoresLibraryMetadata(t *testing.T) {
	write := func(expose bool) string {
		metrics.ExposeMetadata(expose)
		defer metrics.ExposeMetadata(false)
		set := metrics.NewSet()
		for _, l := range []string{`{shard="0"}`, `{shard="1"}`} {
			set.NewPrometheusHistogramExt("h_seconds"+l, metrics.ExponentialBuckets(1, 2, 3)).Update(1.5)
		}
		var raw, out bytes.Buffer
		set.WritePrometheus(&raw)
		metrics.WriteCounterUint64(&raw, `a_total{k="1"}`, 1)
		metrics.WriteCounterUint64(&raw, `a_total{k="2"}`, 2)
		require.Empty(t, Annotate(&out, raw.Bytes(), annotateFamilies))
		return out.String()
	}
	plain, exposed := write(false), write(true)
	require.Equal(t, plain, exposed)
	require.Equal(t, 1, bytes.Count([]byte(plain), []byte("# TYPE h_seconds histogram\n")))
	require.Equal(t, 1, bytes.Count([]byte(plain), []byte("# TYPE a_total counter\n")))
	require.Equal(t, 2, bytes.Count([]byte(plain), []byte("# HELP ")))
	require.Contains(t, plain, `h_seconds_bucket{shard="1",le="+Inf"} 1`)
}
