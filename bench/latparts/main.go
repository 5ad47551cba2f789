// Command latparts measures two parts of the end-to-end latency floor on
// this machine, each on its own: how late a paced sender wakes from
// nanosleep (with 1 µs timer slack, as the load tester sleeps), and one
// loopback TCP hop from a write to a reader parked in Go's netpoller (or,
// with -blocking, in a blocking read on a locked thread).
//
//	go run ./bench/latparts -n 30000
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func summary(x []int64) string {
	slices.Sort(x)
	q := func(p float64) float64 { return float64(x[int(p*float64(len(x)-1))]) / 1e3 }
	return fmt.Sprintf("p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f µs", q(.5), q(.9), q(.99), q(.999))
}

func main() {
	n := flag.Int("n", 30000, "samples")
	gap := flag.Int64("gap", 100_000, "ns between samples (the sleep)")
	blocking := flag.Bool("blocking", false, "read with a blocking read on a locked thread instead of the netpoller")
	flag.Parse()
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)

	late := make([]int64, 0, *n)
	for range *n {
		t0 := mono()
		ts := unix.NsecToTimespec(*gap)
		_ = unix.Nanosleep(&ts, nil)
		late = append(late, mono()-t0-*gap)
	}
	fmt.Println("nanosleep lateness:", summary(late))

	hops, err := hop(*n, *gap, *blocking)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("one loopback hop:  ", summary(hops))
}

func hop(n int, gap int64, blocking bool) ([]int64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	s, err := ln.Accept()
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.Close() }()
	res := make(chan []int64, 1)
	read := func(rd func([]byte) (int, error)) {
		buf := make([]byte, 8)
		lat := make([]int64, 0, n)
		for range n {
			if k, err := rd(buf); err != nil || k != 8 {
				break
			}
			lat = append(lat, mono()-int64(binary.LittleEndian.Uint64(buf)))
		}
		res <- lat
	}
	if blocking {
		f, err := s.(*net.TCPConn).File()
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		fd := int(f.Fd())
		if err := unix.SetNonblock(fd, false); err != nil {
			return nil, err
		}
		go func() {
			runtime.LockOSThread()
			read(func(b []byte) (int, error) { return unix.Read(fd, b) })
		}()
	} else {
		go read(s.Read)
	}
	buf := make([]byte, 8)
	for range n {
		ts := unix.NsecToTimespec(gap)
		_ = unix.Nanosleep(&ts, nil)
		binary.LittleEndian.PutUint64(buf, uint64(mono()))
		if _, err := c.Write(buf); err != nil {
			return nil, err
		}
	}
	return <-res, nil
}
