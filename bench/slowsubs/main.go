// Command slowsubs measures what subscribers that never read cost the
// healthy clients of a broker (issue 11, finding 5). For each run it starts
// a fresh broker from each binary given, creates a memory topic, and runs
// `ratatoskr loadtest` on it at a fixed rate with one subscriber: once
// alone, and once with -slow raw connections that Hello, Subscribe to the
// same topic and never read their socket again. Runs alternate (binary by
// binary, without and with the stuck subscribers) so that the machine's
// noise falls on both sides alike. It prints every run and then the
// medians per binary and mode.
//
//	go build -o /tmp/ratatoskr-after ./cmd/ratatoskr
//	go run ./bench/slowsubs -bin before=/tmp/ratatoskr-before,after=/tmp/ratatoskr-after -runs 3
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/bench/internal/broker"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

type options struct {
	bins     []binary
	runs     int
	slow     int
	rate     int
	size     int
	duration time.Duration
	extra    []string // more `serve` arguments
	logs     string   // directory for each run's latency log, if set
}

type binary struct{ label, path string }

// result is what one loadtest run printed, plus what the broker counted.
type result struct {
	PublishRate float64 `json:"publish_rate"`
	DeliverRate float64 `json:"deliver_rate"`
	Lost        uint64  `json:"lost"`
	BrokerCPU   float64 `json:"broker_cpu"`
	LatencyUS   struct {
		P50  float64 `json:"p50"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
		Max  float64 `json:"max"`
	} `json:"latency_us"`
	cuts float64 // slow-consumer disconnects, from /metrics
}

func main() {
	var o options
	bins := flag.String("bin", "bin/ratatoskr", "broker binaries, comma-separated, each optionally LABEL=PATH")
	flag.IntVar(&o.runs, "runs", 3, "runs per binary and mode")
	flag.IntVar(&o.slow, "slow", 30, "subscribers that never read")
	flag.IntVar(&o.rate, "rate", 20000, "messages per second of the healthy producer")
	flag.IntVar(&o.size, "size", 128, "payload bytes")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of each run; past the slow-consumer timeout to show all of it")
	serveArgs := flag.String("serve-args", "", "more arguments for `ratatoskr serve`, space-separated")
	flag.StringVar(&o.logs, "latency-logs", "", "write each run's per-message latency log (loadtest --latency-log) into this directory")
	flag.Parse()
	for _, b := range strings.Split(*bins, ",") {
		label, path, ok := strings.Cut(b, "=")
		if !ok {
			label, path = filepath.Base(b), b
		}
		o.bins = append(o.bins, binary{label, path})
	}
	o.extra = strings.Fields(*serveArgs)
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "slowsubs:", err)
		os.Exit(1)
	}
}

type row struct {
	bin  string
	slow int
	r    result
}

func run(o options) error {
	var rows []row
	for i := range o.runs {
		for _, b := range o.bins {
			for _, slow := range []int{0, o.slow} {
				fmt.Fprintf(os.Stderr, "run %d: %s with %d stuck subscribers...\n", i+1, b.label, slow)
				r, err := once(o, b.path, slow, fmt.Sprintf("%s-%d-run%d.log", b.label, slow, i+1))
				if err != nil {
					return fmt.Errorf("%s, %d stuck: %w", b.label, slow, err)
				}
				rows = append(rows, row{b.label, slow, r})
				fmt.Fprintf(os.Stderr, "  %s\n", format(r))
			}
		}
	}
	return report(o, rows)
}

// once starts a broker, runs the load test with slow stuck subscribers
// beside it, and stops the broker.
func once(o options, bin string, slow int, logName string) (result, error) {
	addr, err := broker.FreeAddr()
	if err != nil {
		return result{}, err
	}
	httpAddr, err := broker.FreeAddr()
	if err != nil {
		return result{}, err
	}
	dir, err := os.MkdirTemp("", "ratatoskr-slowsubs")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	const token = "slowsubs-token"
	args := append([]string{"serve", "--addr", addr, "--http-addr", httpAddr, "--data", dir,
		"--admin-token", token, "--log-level", "error"}, o.extra...)
	serve := exec.Command(bin, args...)
	serve.Stderr = os.Stderr
	if err := serve.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		_ = serve.Process.Signal(os.Interrupt)
		_ = serve.Wait()
	}()
	if err := broker.WaitListening(addr); err != nil {
		return result{}, err
	}
	const topic = "slowsubs"
	if out, err := exec.Command(bin, "topic", "create", topic, "--server", addr, "--storage", "memory").CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("create topic: %w: %s", err, out)
	}
	var stuck []net.Conn
	defer func() {
		for _, c := range stuck {
			_ = c.Close()
		}
	}()
	for range slow {
		c, err := stuckSubscriber(addr, topic)
		if err != nil {
			return result{}, err
		}
		stuck = append(stuck, c)
	}
	args = []string{"loadtest", "--server", addr, "--topic", topic, "--json",
		"--rate", strconv.Itoa(o.rate), "--size", strconv.Itoa(o.size), "--duration", o.duration.String(),
		"--subscribers", "1", "--broker-pid", strconv.Itoa(serve.Process.Pid)}
	if o.logs != "" {
		args = append(args, "--latency-log", filepath.Join(o.logs, logName))
	}
	r, err := loadtest(bin, args...)
	if err != nil {
		return r, err
	}
	r.cuts, err = scrape(httpAddr, token, "ratatoskr_slow_consumer_disconnects_total")
	return r, err
}

// stuckSubscriber subscribes to topic and then never reads: its socket
// buffers fill and the broker holds whatever it sends it from then on.
func stuckSubscriber(addr, topic string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	ask := func(t, want wire.Type, body []byte) error {
		if _, err := c.Write(append(wire.AppendHeader(nil, t, 0, 1, len(body)), body...)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf []byte
		for {
			f, n, err := wire.ReadFrame(buf, 1<<20)
			if err != nil {
				return err
			}
			if n > 0 {
				if f.Type != want {
					return fmt.Errorf("got frame type %v, want %v", f.Type, want)
				}
				return nil
			}
			chunk := make([]byte, 4096)
			m, err := c.Read(chunk)
			if err != nil {
				return err
			}
			buf = append(buf, chunk[:m]...)
		}
	}
	err = ask(wire.TypeHello, wire.TypeHelloOK, (&wire.Hello{MinVersion: 1, MaxVersion: 1, ClientName: "slowsubs"}).Append(nil))
	if err == nil {
		err = ask(wire.TypeSubscribe, wire.TypeSubscribeOK, (&wire.Subscribe{Topic: topic, Partition: wire.PartitionAny}).Append(nil))
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// loadtest runs the binary's load tester and parses the JSON on its last line.
func loadtest(bin string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r result
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &r); jerr != nil {
		return r, errors.Join(err, jerr)
	}
	return r, err
}

// scrape sums the series of one metric family.
func scrape(httpAddr, token, family string) (float64, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || (name != family && !strings.HasPrefix(name, family+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, sc.Err()
}

func format(r result) string {
	return fmt.Sprintf("publish %.0f msg/s, deliver %.0f msg/s, p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs, lost %d, broker CPU %.2f, slow-consumer cuts %.0f",
		r.PublishRate, r.DeliverRate, r.LatencyUS.P50, r.LatencyUS.P99, r.LatencyUS.P999, r.LatencyUS.Max, r.Lost, r.BrokerCPU, r.cuts)
}

// report prints every run, then the medians by binary and mode.
func report(o options, rows []row) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "binary\tstuck subs\tdeliver msg/s\tp50 µs\tp99 µs\tp99.9 µs\tmax µs\tlost\tbroker CPU\tcuts")
	line := func(bin, slow string, r result) {
		_, _ = fmt.Fprintf(w, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%.2f\t%.0f\n", bin, slow, r.DeliverRate,
			r.LatencyUS.P50, r.LatencyUS.P99, r.LatencyUS.P999, r.LatencyUS.Max, r.Lost, r.BrokerCPU, r.cuts)
	}
	for _, rw := range rows {
		line(rw.bin, strconv.Itoa(rw.slow), rw.r)
	}
	for _, b := range o.bins {
		for _, slow := range []int{0, o.slow} {
			var rs []result
			for _, rw := range rows {
				if rw.bin == b.label && rw.slow == slow {
					rs = append(rs, rw.r)
				}
			}
			line(b.label, strconv.Itoa(slow)+" (median)", median(rs))
		}
	}
	return w.Flush()
}

// median takes the median of each figure on its own.
func median(rs []result) result {
	m := func(f func(r result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var out result
	out.DeliverRate = m(func(r result) float64 { return r.DeliverRate })
	out.LatencyUS.P50 = m(func(r result) float64 { return r.LatencyUS.P50 })
	out.LatencyUS.P99 = m(func(r result) float64 { return r.LatencyUS.P99 })
	out.LatencyUS.P999 = m(func(r result) float64 { return r.LatencyUS.P999 })
	out.LatencyUS.Max = m(func(r result) float64 { return r.LatencyUS.Max })
	out.Lost = uint64(m(func(r result) float64 { return float64(r.Lost) }))
	out.BrokerCPU = m(func(r result) float64 { return r.BrokerCPU })
	out.cuts = m(func(r result) float64 { return r.cuts })
	return out
}
