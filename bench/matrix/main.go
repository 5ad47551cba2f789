// Command matrix runs the load-test matrix behind `make bench`: it starts
// `ratatoskr serve` on a free loopback port, runs `ratatoskr loadtest` for
// each scenario against it, and prints one table with the issue targets
// beside the measured figures and the CPU both sides used.
//
//	go run ./bench/matrix -bin bin/ratatoskr [-duration 5s] [-markdown]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/bench/internal/broker"
)

type scenario struct {
	name   string
	args   []string
	target string
	figure func(r result) string
}

type result struct {
	PublishRate float64 `json:"publish_rate"`
	DeliverRate float64 `json:"deliver_rate"`
	Lost        uint64  `json:"lost"`
	ToolCPU     float64 `json:"tool_cpu"`
	BrokerCPU   float64 `json:"broker_cpu"`
	LatencyUS   struct {
		P50, P90, P99, P999 float64
	} `json:"latency_us"`
}

func (r *result) UnmarshalJSON(b []byte) error {
	type plain result
	var aux struct {
		plain
		Lat map[string]float64 `json:"latency_us"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*r = result(aux.plain)
	r.LatencyUS.P50, r.LatencyUS.P90 = aux.Lat["p50"], aux.Lat["p90"]
	r.LatencyUS.P99, r.LatencyUS.P999 = aux.Lat["p99"], aux.Lat["p999"]
	return nil
}

func rate(v float64) string { return fmt.Sprintf("%.2fM msg/s", v/1e6) }

func scenarios() []scenario {
	lat := func(r result) string {
		l := r.LatencyUS
		return fmt.Sprintf("%.0f / %.0f / %.0f / %.0f µs", l.P50, l.P90, l.P99, l.P999)
	}
	return []scenario{
		{"publish-only, 1 producer", []string{"--subscribers", "0"}, "≥ 10M msg/s", func(r result) string { return rate(r.PublishRate) }},
		{"publish-only, 2 producers", []string{"--subscribers", "0", "--producers", "2", "--partitions", "2"}, "≥ 10M msg/s", func(r result) string { return rate(r.PublishRate) }},
		{"1 → 1 delivered", []string{"--subscribers", "1"}, "≥ 5M msg/s", func(r result) string { return rate(r.DeliverRate) }},
		{"1 → 4 deliveries", []string{"--subscribers", "4"}, "≥ 10M msg/s", func(r result) string { return rate(r.DeliverRate) }},
		{"1 → 1 at 10k msg/s, p50/p90/p99/p99.9", []string{"--rate", "10000"}, "p99 ≤ 60 µs", lat},
		{"1 → 1 at 100k msg/s, p50/p90/p99/p99.9", []string{"--rate", "100000"}, "≤ 50 / - / 100 / 500 µs", lat},
		{"1 → 1 at 500k msg/s, p50/p90/p99/p99.9", []string{"--rate", "500000"}, "p99 ≤ 300 µs, p99.9 ≤ 1 ms", lat},
		{"durable, fsync always, publish-only", []string{"--durable", "--subscribers", "0"}, "≥ 1M msg/s", func(r result) string { return rate(r.PublishRate) }},
		{"durable, fsync never, publish-only", []string{"--durable", "--fsync", "never", "--subscribers", "0"}, "within 20% of memory", func(r result) string { return rate(r.PublishRate) }},
		{"durable, fsync always, 1 → 1 at 100k msg/s", []string{"--durable", "--rate", "100000"}, "ack p99 ≤ 2 ms", lat},
		{"replay of 10M messages from disk", []string{"--durable", "--fsync", "never", "--replay", "--count", "10000000"}, "≥ 3M msg/s", func(r result) string { return rate(r.DeliverRate) }},
		{"group of 3, 6 partitions, offset commits", groupArgs("offset", 6000000), "≥ 3M msg/s", func(r result) string { return rate(r.DeliverRate) }},
		{"group of 3, 6 partitions, message acks", groupArgs("message", 3000000), "≥ 1M msg/s", func(r result) string { return rate(r.DeliverRate) }},
	}
}

// groupArgs is a consumer-group scenario: six producers fill six
// partitions of a disk topic, then a group of three reads them back.
func groupArgs(ack string, count int) []string {
	return []string{"--durable", "--fsync", "never", "--replay", "--count", strconv.Itoa(count), "--producers", "6",
		"--partitions", "6", "--subscribers", "3", "--group", "bench-" + ack, "--ack", ack}
}

func main() {
	bin := flag.String("bin", "bin/ratatoskr", "ratatoskr binary")
	duration := flag.Duration("duration", 5*time.Second, "length of each run")
	markdown := flag.Bool("markdown", false, "print a Markdown table")
	flag.Parse()
	if err := run(*bin, *duration, *markdown); err != nil {
		fmt.Fprintln(os.Stderr, "matrix:", err)
		os.Exit(1)
	}
}

func run(bin string, duration time.Duration, markdown bool) error {
	addr, err := broker.FreeAddr()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ratatoskr-matrix")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	serve := exec.Command(bin, "serve", "--addr", addr, "--http-addr", "", "--data", dir, "--log-level", "warn")
	serve.Stderr = os.Stderr
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() {
		_ = serve.Process.Signal(os.Interrupt)
		_ = serve.Wait()
	}()
	if err := broker.WaitListening(addr); err != nil {
		return err
	}
	var rows [][]string
	for i, sc := range scenarios() {
		fmt.Fprintf(os.Stderr, "running %s...\n", sc.name)
		args := append([]string{"loadtest", "--server", addr, "--duration", duration.String(), "--json",
			"--topic", "matrix-" + strconv.Itoa(i), "--broker-pid", strconv.Itoa(serve.Process.Pid)}, sc.args...)
		r, err := loadtest(bin, args)
		// Each row starts from a broker without the previous rows' data,
		// and from a quiet disk: the durable rows write gigabytes, whose
		// files, page cache and pending writeback would otherwise still
		// load the machine while the next rows run.
		if derr := exec.Command(bin, "topic", "delete", "matrix-"+strconv.Itoa(i), "--server", addr).Run(); derr != nil {
			fmt.Fprintf(os.Stderr, "deleting topic matrix-%d: %v\n", i, derr)
		}
		unix.Sync()
		waitReclaimed(dir + "/trash")
		if err != nil {
			rows = append(rows, []string{sc.name, sc.target, "error: " + err.Error(), "", ""})
			continue
		}
		rows = append(rows, []string{sc.name, sc.target, sc.figure(r), strconv.FormatUint(r.Lost, 10),
			fmt.Sprintf("%.2f / %.2f", r.ToolCPU, r.BrokerCPU)})
	}
	return printTable(rows, markdown)
}

// loadtest runs one scenario and parses the JSON on its last line.
func loadtest(bin string, args []string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r result
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &r); jerr != nil {
		return r, errors.Join(err, jerr)
	}
	return r, err
}

func printTable(rows [][]string, markdown bool) error {
	head := []string{"scenario (128 B payloads)", "target", "measured", "lost", "CPU tool / broker"}
	if markdown {
		fmt.Println("| " + strings.Join(head, " | ") + " |")
		fmt.Println("|" + strings.Repeat("---|", len(head)))
		for _, r := range rows {
			fmt.Println("| " + strings.Join(r, " | ") + " |")
		}
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, r := range rows {
		_, _ = fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// waitReclaimed waits (up to two minutes) until the broker's reclaimer has
// deleted the files of the topic just deleted: it shrinks them in the
// background at a bounded rate, and the next row should not share the
// disk with it.
func waitReclaimed(trash string) {
	start := time.Now()
	for time.Since(start) < 2*time.Minute {
		entries, err := os.ReadDir(trash)
		if err != nil || len(entries) == 0 {
			if d := time.Since(start); d > time.Second {
				fmt.Fprintf(os.Stderr, "  (waited %v for the deleted topic's files)\n", d.Round(time.Second))
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "  the deleted topic's files are still being reclaimed; going on")
}
