package redisclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

var (
	addr      = envOr("RADDR", "127.0.0.1:16399")
	redisPID  = readPID()
	batchSize = 13 * 1024
	payload   = makePayload(64, batchSize) // 64 distinct 13 KiB batches
)

const (
	readKey     = "rs"
	readEntries = 20000
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func readPID() int {
	b, err := os.ReadFile(envOr("REDIS_PID_FILE", "/tmp/redisclient/redis.pid"))
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

func makePayload(n, size int) [][]byte {
	r := rand.New(rand.NewSource(1))
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		r.Read(out[i])
	}
	return out
}

func procCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redis-server process CPU (all threads), from /proc/<pid>/stat, clock ticks of 10ms.
func redisCPU() time.Duration {
	if redisPID == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", redisPID))
	if err != nil {
		return 0
	}
	s := string(b)
	s = s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(s)
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// runPar runs b.N operations spread over g goroutines; each op moves entriesPerOp entries.
func runPar(b *testing.B, g, entriesPerOp int, op func(worker, i int) error) {
	b.SetBytes(int64(entriesPerOp * batchSize))
	b.ReportAllocs()
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	c0, r0 := procCPU(), redisCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for w := 0; w < g; w++ {
		n := b.N / g
		if w == 0 {
			n += b.N % g
		}
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := op(w, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}(w, n)
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	c1, r1 := procCPU(), redisCPU()
	runtime.ReadMemStats(&ms1)
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	ent := float64(b.N * entriesPerOp)
	b.ReportMetric(ent/el.Seconds(), "entries/s")
	b.ReportMetric(float64(c1-c0)/1e3/ent, "cliCPUus/entry")
	b.ReportMetric(float64(r1-r0)/1e3/ent, "srvCPUus/entry")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/ent, "allocs/entry")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/ent, "B/entry")
}

// admin is a go-redis client used only for setup (DEL, preload, BGREWRITEAOF).
func admin(b *testing.B) *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: addr, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
}

// resetWrite deletes the writer keys and compacts the AOF so each write run starts alike.
func resetWrite(b *testing.B, keys ...string) {
	a := admin(b)
	defer a.Close()
	ctx := context.Background()
	for _, k := range keys {
		a.Unlink(ctx, k)
	}
	if err := a.BgRewriteAOF(ctx).Err(); err != nil && !strings.Contains(err.Error(), "already in progress") {
		b.Logf("bgrewriteaof: %v", err)
	}
	for {
		time.Sleep(50 * time.Millisecond)
		info := a.Info(ctx, "persistence").Val()
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			break
		}
	}
}

var preloadOnce sync.Once

func preload(b *testing.B) {
	preloadOnce.Do(func() {
		a := admin(b)
		defer a.Close()
		ctx := context.Background()
		if n, _ := a.XLen(ctx, readKey).Result(); n == readEntries {
			return
		}
		a.Unlink(ctx, readKey)
		for i := 1; i <= readEntries; i += 100 {
			_, err := a.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for j := i; j < i+100 && j <= readEntries; j++ {
					p.XAdd(ctx, &goredis.XAddArgs{Stream: readKey, ID: fmt.Sprintf("%d-0", j), Values: []any{"b", payload[j%64]}})
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// readStart returns the XRANGE start id for worker w, call i (sequential scan, wrapping).
func readStart(w, g, i int) (string, int) {
	per := readEntries / g
	pos := (w*per+i*64)%(readEntries-64) + 1
	return strconv.Itoa(pos) + "-0", pos
}

const luaSrc = `
local base = ARGV[1]
local last
for i = 2, #ARGV do
  last = redis.call('XADD', KEYS[1], base .. '-*', 'b', ARGV[i])
end
redis.call('HSET', KEYS[2], 'last', last, 'n', #ARGV - 1)
return last
`

// ---- minimal RESP2/RESP3 walker for raw XRANGE replies (go-redis DoRawWriteTo) ----

var errShort = errors.New("resp: short")

type respErr string

func (e respErr) Error() string { return string(e) }

func line(buf []byte) ([]byte, []byte, error) {
	i := bytes.Index(buf, []byte("\r\n"))
	if i < 0 {
		return nil, nil, errShort
	}
	return buf[:i], buf[i+2:], nil
}

func atoi(b []byte) int {
	n, neg := 0, false
	for _, c := range b {
		if c == '-' {
			neg = true
			continue
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		return -n
	}
	return n
}

func bulk(buf []byte) ([]byte, []byte, error) {
	l, rest, err := line(buf)
	if err != nil {
		return nil, nil, err
	}
	switch l[0] {
	case '$':
		n := atoi(l[1:])
		if n < 0 {
			return nil, rest, nil
		}
		return rest[:n], rest[n+2:], nil
	case '+':
		return l[1:], rest, nil
	case '-':
		return nil, nil, respErr(l[1:])
	}
	return nil, nil, fmt.Errorf("resp: unexpected %q", l[0])
}

// parseXRange calls fn(id, field-b-value) for every entry; slices alias buf.
func parseXRange(buf []byte, fn func(id, val []byte)) error {
	l, buf, err := line(buf)
	if err != nil {
		return err
	}
	if l[0] == '-' || l[0] == '!' {
		return respErr(l[1:])
	}
	n := atoi(l[1:])
	for i := 0; i < n; i++ {
		if _, buf, err = line(buf); err != nil { // *2
			return err
		}
		var id []byte
		if id, buf, err = bulk(buf); err != nil {
			return err
		}
		if l, buf, err = line(buf); err != nil { // *2k or %k
			return err
		}
		m := atoi(l[1:])
		if l[0] == '*' {
			m /= 2
		}
		for j := 0; j < m; j++ {
			var f, v []byte
			if f, buf, err = bulk(buf); err != nil {
				return err
			}
			if v, buf, err = bulk(buf); err != nil {
				return err
			}
			if len(f) == 1 && f[0] == 'b' {
				fn(id, v)
			}
		}
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 1<<20)) }}
