package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteSummary prints the result as a table for people.
func WriteSummary(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"topic", topicString(r)},
		{"producers / subscribers / partitions", fmt.Sprintf("%d / %d / %d", r.Producers, r.Subscribers, r.Partitions)},
		{"payload", payloadString(r)},
		{"target rate", rateString(r.TargetRate, r.BurstIntervalUS)},
		{"published", fmt.Sprintf("%d in %.2fs", r.Published, r.PublishSeconds)},
		{"publish rate", si(r.PublishRate) + " msg/s"},
		{"deliver rate", si(r.DeliverRate) + " msg/s"},
		{"throughput", fmt.Sprintf("%.1f MB/s", r.MBPerSec)},
	}
	if r.Subscribers > 0 {
		l := r.LatencyUS
		rows = append(rows,
			[2]string{"latency p50 / p90 / p99", micros(l.P50, l.P90, l.P99)},
			[2]string{"latency p99.9 / p99.99 / max", micros(l.P999, l.P9999, l.Max)})
	}
	if l := r.ProducerLatenessUS; l != nil {
		rows = append(rows, [2]string{"producer lateness p50 / p99 / max", micros(l.P50, l.P99, l.Max)})
	}
	if r.Subscribers > 0 {
		rows = append(rows, [2]string{"lost / duplicated / reordered", fmt.Sprintf("%d / %d / %d", r.Lost, r.Duplicated, r.Reordered)})
	}
	rows = append(rows, [2]string{"CPU: tool / broker", fmt.Sprintf("%.2f / %s cores", r.ToolCPU, cpuString(r.BrokerCPU))})
	if r.MeanBurst > 0 {
		rows = append(rows, [2]string{"paced sends per wake-up", fmt.Sprintf("%.1f", r.MeanBurst)})
	}
	for _, row := range rows {
		if _, err := fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1]); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// WriteJSON prints the result as one JSON line, for scripts.
func WriteJSON(w io.Writer, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// FormatMicros formats a duration given in microseconds in the unit that
// fits it: 850µs, 3.2ms, 250ms, 1.4s. Every latency the tool prints for
// people goes through it; the JSON keeps plain numbers.
func FormatMicros(us float64) string {
	switch {
	case us < 999.5:
		return fmt.Sprintf("%.0fµs", us)
	case us < 99_950:
		return fmt.Sprintf("%.1fms", us/1e3)
	case us < 999_500:
		return fmt.Sprintf("%.0fms", us/1e3)
	case us < 99_950_000:
		return fmt.Sprintf("%.1fs", us/1e6)
	}
	return fmt.Sprintf("%.0fs", us/1e6)
}

func micros(v ...float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = FormatMicros(x)
	}
	return strings.Join(s, " / ")
}

func topicString(r *Result) string {
	t := TopicShape{Name: r.Topic, Storage: r.Storage, Fsync: r.Fsync, Partitions: r.Partitions}
	switch {
	case t.Storage != "":
	case r.Durable:
		t.Storage = "disk"
	default:
		t.Storage = "memory"
	}
	return t.String()
}

func rateString(r int, burstUS float64) string {
	switch {
	case r == 0:
		return "as fast as possible"
	case burstUS > 0:
		return si(float64(r)) + " msg/s in bursts every " + FormatMicros(burstUS)
	}
	return si(float64(r)) + " msg/s, evenly spaced"
}

func cpuString(c float64) string {
	if c == 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", c)
}

// writeLatencyLog writes s's per-message log (see Config.LatencyLog);
// start is the run's start on the tool's clock.
func writeLatencyLog(name string, s *subscriber, start int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	_, _ = fmt.Fprintf(w, "# ratatoskr loadtest latency log: intended send time since the run's start (ns), latency (ns)\n")
	_, _ = fmt.Fprintf(w, "# %d messages logged, %d more received and not logged\n", len(s.trace), s.untraced)
	at := epoch.Add(time.Duration(start))
	_, _ = fmt.Fprintf(w, "# run started %s (unix ns %d)\n", at.UTC().Format(time.RFC3339Nano), at.UnixNano())
	var line []byte
	for _, e := range s.trace {
		line = strconv.AppendInt(line[:0], e[0]-start, 10)
		line = append(line, '\t')
		line = strconv.AppendInt(line, e[1], 10)
		line = append(line, '\n')
		_, _ = w.Write(line)
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// payloadString is the payload size, with its filler and the producers'
// compression when they are not the defaults.
func payloadString(r *Result) string {
	s := fmt.Sprintf("%d B", r.Size)
	if r.Payload != "" && r.Payload != PayloadLetters {
		s += " " + r.Payload
	}
	if r.Compression != "" && r.Compression != "none" {
		s += ", " + r.Compression + " compressed"
	}
	return s
}
