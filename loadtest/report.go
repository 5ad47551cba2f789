package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteSummary prints the result as a table for people.
func WriteSummary(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"producers / subscribers / partitions", fmt.Sprintf("%d / %d / %d", r.Producers, r.Subscribers, r.Partitions)},
		{"payload", payloadString(r)},
		{"target rate", rateString(r.TargetRate)},
		{"published", fmt.Sprintf("%d in %.2fs", r.Published, r.PublishSeconds)},
		{"publish rate", si(r.PublishRate) + " msg/s"},
		{"deliver rate", si(r.DeliverRate) + " msg/s"},
		{"throughput", fmt.Sprintf("%.1f MB/s", r.MBPerSec)},
	}
	if r.Subscribers > 0 {
		rows = append(rows,
			[2]string{"latency p50 / p90 / p99", fmt.Sprintf("%.0f / %.0f / %.0f µs", r.LatencyUS.P50, r.LatencyUS.P90, r.LatencyUS.P99)},
			[2]string{"latency p99.9 / p99.99 / max", fmt.Sprintf("%.0f / %.0f / %.0f µs", r.LatencyUS.P999, r.LatencyUS.P9999, r.LatencyUS.Max)},
			[2]string{"lost / duplicated / reordered", fmt.Sprintf("%d / %d / %d", r.Lost, r.Duplicated, r.Reordered)})
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

func rateString(r int) string {
	if r == 0 {
		return "as fast as possible"
	}
	return si(float64(r)) + " msg/s"
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
