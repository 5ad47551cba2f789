// Command echofloor measures the latency floor of this machine for the
// broker's building blocks, with no broker logic in between: a gnet echo
// server with one event loop, and a Go client that sends 128-byte messages
// paced exactly like `ratatoskr loadtest` (nanosleep on a locked thread with
// 1 µs timer slack) and reads the echoes through Go's netpoller. The round
// trip crosses two hops, as a publish to a subscriber does (producer →
// broker → subscriber), so it bounds what the broker's end-to-end latency
// can reach with this client stack.
//
//	go run ./bench/echofloor -rate 10000 -duration 4s
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

type echo struct{ gnet.BuiltinEventEngine }

func (*echo) OnTraffic(c gnet.Conn) gnet.Action {
	b, _ := c.Next(-1)
	_, _ = c.Write(b)
	return gnet.None
}

var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

func main() {
	rate := flag.Int("rate", 10000, "messages per second")
	duration := flag.Duration("duration", 4*time.Second, "run length")
	serve := flag.String("serve", "", "internal: run the echo server on this address")
	flag.Parse()
	if *serve != "" {
		_ = gnet.Run(&echo{}, "tcp://"+*serve, gnet.WithNumEventLoop(1), gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogLevel(4))
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	// The server is a process of its own, as the broker is.
	srv := exec.Command(os.Args[0], "-serve", addr)
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	err = measure(addr, *rate, *duration)
	_ = srv.Process.Kill()
	_ = srv.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func measure(addr string, rate int, duration time.Duration) error {
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	n := int(float64(rate) * duration.Seconds())
	h := hdrhistogram.New(1000, int64(time.Minute), 3)
	done := make(chan struct{})
	go read(c, n, h, done)
	send(c, n, float64(rate))
	<-done
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e3 }
	fmt.Printf("echo floor at %d msg/s: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f µs\n", rate, q(50), q(90), q(99), q(99.9))
	return nil
}

func read(c net.Conn, n int, h *hdrhistogram.Histogram, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 64<<10)
	have := 0 // bytes of a partial message at the start of buf
	for got := 0; got < n; {
		m, err := c.Read(buf[have:])
		if err != nil {
			return
		}
		have += m
		t := now()
		off := 0
		for ; have-off >= 128; off += 128 {
			_ = h.RecordValue(max(t-int64(binary.LittleEndian.Uint64(buf[off:])), 1000))
			got++
		}
		have = copy(buf, buf[off:have])
	}
}

// send paces like the load tester: intended send times on a timeline,
// nanosleep of at least 20 µs between bursts (even when behind), and each
// burst written with one write, as the load tester's producer writes one
// frame per burst.
func send(c net.Conn, n int, rate float64) {
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	burst := make([]byte, 0, 128<<10)
	interval := 1e9 / rate
	start := now()
	for i := 0; i < n; {
		due := start + int64(float64(i)*interval)
		ts := unix.NsecToTimespec(max(due-now(), 20_000))
		_ = unix.Nanosleep(&ts, nil)
		burst = burst[:0]
		for t := now(); i < n && start+int64(float64(i)*interval) <= t && len(burst) < cap(burst); i++ {
			msg := burst[len(burst) : len(burst)+128]
			binary.LittleEndian.PutUint64(msg, uint64(start+int64(float64(i)*interval)))
			burst = burst[:len(burst)+128]
		}
		_, _ = c.Write(burst)
	}
}
