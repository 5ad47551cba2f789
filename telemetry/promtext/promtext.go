// Package promtext writes metrics in the Prometheus text exposition format
// (version 0.0.4) with their metadata: each family's samples follow one
// "# HELP" line, which says what is counted and in which unit, and one
// "# TYPE" line.
//
//	# HELP ratatoskr_errors_total Error frames sent to clients, by error code.
//	# TYPE ratatoskr_errors_total counter
//	ratatoskr_errors_total{code="unknown_topic"} 3
//
// VictoriaMetrics/metrics, which keeps the broker's histograms and reads
// the Go runtime's and the process's figures, can write metadata too
// (metrics.ExposeMetadata), but not usefully here: the switch is global to
// the process, so one broker embedded in a program would change every
// other user's output; its HELP lines are empty; a labelled family written
// one series at a time gets a TYPE line per series, which the format
// forbids; and some of its process figures are typed against their names
// (process_io_read_bytes_total as a gauge). So the broker leaves the
// switch alone, writes its own families through Family, and passes what
// the library writes through Annotate with a table of its families.
//
// The package imports only the standard library.
package promtext

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// Type is a metric family's type, as its TYPE line names it.
type Type string

// The types of the text format.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
	Summary   Type = "summary"
	// Untyped is for a family whose name the format's conventions
	// reserve for another type: go_cgo_calls_count counts, but a
	// counter's name should end in _total and only a histogram's or a
	// summary's series may end in _count.
	Untyped Type = "untyped"
)

// Family is a metric family's metadata. Name is the family's name, without
// labels and without a histogram's _bucket, _sum and _count suffixes.
type Family struct {
	Name string
	Type Type
	Help string // one line: what is counted, in which unit
}

// NewCounter makes a counter family.
func NewCounter(name, help string) Family { return Family{Name: name, Type: Counter, Help: help} }

// NewGauge makes a gauge family.
func NewGauge(name, help string) Family { return Family{Name: name, Type: Gauge, Help: help} }

// NewHistogram makes a histogram family.
func NewHistogram(name, help string) Family { return Family{Name: name, Type: Histogram, Help: help} }

// WriteHeader writes f's HELP and TYPE lines. The family's samples must
// follow, before any other family's; a family with no samples yet may
// still be announced.
func (f Family) WriteHeader(w io.Writer) {
	_, _ = io.WriteString(w, "# HELP "+f.Name+" "+escapeHelp(f.Help)+"\n# TYPE "+f.Name+" "+string(f.Type)+"\n")
}

// WriteSample writes one sample of f. labels is "" or a label set with its
// braces, such as {shard="0"}, built with Label for the values.
func (f Family) WriteSample(w io.Writer, labels, value string) {
	_, _ = io.WriteString(w, f.Name+labels+" "+value+"\n")
}

// WriteUint writes f's header and its one sample, for a family without
// labels.
func (f Family) WriteUint(w io.Writer, v uint64) {
	f.WriteHeader(w)
	f.WriteSample(w, "", strconv.FormatUint(v, 10))
}

// WriteFloat is WriteUint for a float value.
func (f Family) WriteFloat(w io.Writer, v float64) {
	f.WriteHeader(w)
	f.WriteSample(w, "", FormatFloat(v))
}

// FormatFloat formats a sample value: the shortest form that reads back
// as v.
func FormatFloat(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Label quotes a label value for the text format: a backslash, a double
// quote and a newline are escaped.
func Label(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return `"` + v + `"`
	}
	return `"` + labelEscaper.Replace(v) + `"`
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	// A HELP text escapes backslashes and newlines, not quotes.
	helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeHelp(s string) string {
	if !strings.ContainsAny(s, "\\\n") {
		return s
	}
	return helpEscaper.Replace(s)
}

// Annotate copies text, the text format as another writer wrote it, to w
// with each family's HELP and TYPE lines from families (by family name)
// before its first sample. Metadata lines already in text are dropped, so
// the output is the same whether or not that writer wrote its own; blank
// lines are dropped too. A series named name_bucket, name_sum or
// name_count belongs to the histogram or summary name when families has
// one.
//
// A family that families does not know is copied without metadata, and
// its name is returned, so that a test can insist there is none. The
// families in text must each be written in one run of lines, as the
// format requires; Annotate does not reorder.
func Annotate(w io.Writer, text []byte, families map[string]Family) (unknown []string) {
	current := ""
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		if len(bytes.TrimSpace(line)) == 0 || line[0] == '#' {
			continue
		}
		f, known := familyOf(seriesName(line), families)
		if f.Name != current {
			current = f.Name
			if known {
				f.WriteHeader(w)
			} else {
				unknown = append(unknown, f.Name)
			}
		}
		_, _ = w.Write(line)
		_, _ = io.WriteString(w, "\n")
	}
	return unknown
}

// seriesName is the metric name a sample line starts with.
func seriesName(line []byte) string {
	if i := bytes.IndexAny(line, "{ \t"); i >= 0 {
		line = line[:i]
	}
	return string(line)
}

// familyOf finds the family a series belongs to; an unknown series is its
// own family.
func familyOf(series string, families map[string]Family) (Family, bool) {
	if f, ok := families[series]; ok {
		return f, true
	}
	for _, suffix := range [...]string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		f, ok := families[base]
		if ok && (f.Type == Histogram || f.Type == Summary && suffix != "_bucket") {
			return f, true
		}
	}
	return Family{Name: series}, false
}
