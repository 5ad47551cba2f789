// Command deletestall measures how deleting a large file stalls the fsyncs
// of another file on the same file system: it writes a file of -size,
// then appends 4 KiB and fsyncs a second file every millisecond while the
// large one is deleted with one unlink, or shrunk -chunk at a time with an
// fsync after each step and -pause between steps (as storage.Reclaimer
// does), and reports the fsync latencies.
//
//	go run ./bench/deletestall -dir /var/tmp -mode unlink
//	go run ./bench/deletestall -dir /var/tmp -mode chunks -chunk 4194304 -pause 5ms
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the file system to test")
	mode := flag.String("mode", "unlink", "unlink, chunks or none")
	size := flag.Int64("size", 4<<30, "bytes of the file to delete")
	chunk := flag.Int64("chunk", 4<<20, "bytes per step in chunks mode")
	pause := flag.Duration("pause", 5*time.Millisecond, "pause between steps in chunks mode")
	flag.Parse()
	if err := run(*dir, *mode, *size, *chunk, *pause); err != nil {
		fmt.Fprintln(os.Stderr, "deletestall:", err)
		os.Exit(1)
	}
}

func run(parent, mode string, size, chunk int64, pause time.Duration) error {
	dir, err := os.MkdirTemp(parent, "deletestall")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	big := dir + "/big"
	if err := fill(big, size); err != nil {
		return err
	}
	small, err := os.Create(dir + "/small")
	if err != nil {
		return err
	}
	defer func() { _ = small.Close() }()

	var stop atomic.Bool
	lats := make(chan []time.Duration)
	go func() {
		var l []time.Duration
		b := make([]byte, 4096)
		for !stop.Load() {
			t := time.Now()
			_, _ = small.Write(b)
			_ = small.Sync()
			l = append(l, time.Since(t))
			time.Sleep(time.Millisecond)
		}
		lats <- l
	}()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	switch mode {
	case "unlink":
		err = os.Remove(big)
	case "chunks":
		err = shrink(big, chunk, pause)
	case "none":
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	took := time.Since(t0)
	time.Sleep(2 * time.Second)
	stop.Store(true)
	l := <-lats
	if err != nil {
		return err
	}
	slices.Sort(l)
	fmt.Printf("%s of %d MiB took %v; other file's fsync: n %d, p50 %v, p99 %v, max %v\n", mode, size>>20,
		took.Round(time.Millisecond), len(l), l[len(l)/2].Round(time.Microsecond),
		l[len(l)*99/100].Round(time.Microsecond), l[len(l)-1].Round(time.Microsecond))
	return nil
}

func fill(name string, size int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func shrink(name string, chunk int64, pause time.Duration) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	for sz := st.Size(); sz > 0; {
		time.Sleep(pause)
		sz = max(sz-chunk, 0)
		if err := f.Truncate(sz); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Remove(name)
}
