package redisclient

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"unsafe"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

var sink atomic.Int64

func newRueidis(b *testing.B, always bool) rueidis.Client {
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      []string{addr},
		DisableCache:     true,
		AlwaysPipelining: always,
	})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func newGoRedis(b *testing.B) *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: addr})
}

type writer func(ctx context.Context, w int, base int, n int) error

func rueidisWriters(c rueidis.Client) (evalsha, pipe writer) {
	script := rueidis.NewLuaScript(luaSrc)
	evalsha = func(ctx context.Context, w, base, n int) error {
		args := make([]string, 0, n+1)
		args = append(args, strconv.Itoa(base))
		for i := 0; i < n; i++ {
			args = append(args, rueidis.BinaryString(payload[i]))
		}
		k := "ws:" + strconv.Itoa(w)
		return script.Exec(ctx, c, []string{k, k + ":meta"}, args).Error()
	}
	pipe = func(ctx context.Context, w, base, n int) error {
		k := "ws:" + strconv.Itoa(w)
		id := strconv.Itoa(base) + "-*"
		cmds := make(rueidis.Commands, 0, n)
		for i := 0; i < n; i++ {
			cmds = append(cmds, c.B().Xadd().Key(k).Id(id).FieldValue().FieldValue("b", rueidis.BinaryString(payload[i])).Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	}
	return
}

func goredisWriters(c *goredis.Client) (evalsha, pipe writer) {
	script := goredis.NewScript(luaSrc)
	evalsha = func(ctx context.Context, w, base, n int) error {
		args := make([]any, 0, n+1)
		args = append(args, base)
		for i := 0; i < n; i++ {
			args = append(args, payload[i]) // []byte is written as-is, no copy
		}
		k := "ws:" + strconv.Itoa(w)
		return script.Run(ctx, c, []string{k, k + ":meta"}, args...).Err()
	}
	pipe = func(ctx context.Context, w, base, n int) error {
		k := "ws:" + strconv.Itoa(w)
		id := strconv.Itoa(base) + "-*"
		_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := 0; i < n; i++ {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: k, ID: id, Values: []any{"b", payload[i]}})
			}
			return nil
		})
		return err
	}
	return
}

func BenchmarkWrite(b *testing.B) {
	const g = 2
	keys := []string{"ws:0", "ws:0:meta", "ws:1", "ws:1:meta"}
	for _, cli := range []string{"rueidis", "rueidisAlways", "goredis"} {
		for _, mode := range []string{"evalsha", "pipe"} {
			for _, n := range []int{16, 64} {
				b.Run(fmt.Sprintf("%s/%s/N=%d", cli, mode, n), func(b *testing.B) {
					resetWrite(b, keys...)
					var ev, pp writer
					switch cli {
					case "rueidis", "rueidisAlways":
						c := newRueidis(b, cli == "rueidisAlways")
						defer c.Close()
						ev, pp = rueidisWriters(c)
					case "goredis":
						c := newGoRedis(b)
						defer c.Close()
						ev, pp = goredisWriters(c)
					}
					wr := ev
					if mode == "pipe" {
						wr = pp
					}
					ctx := context.Background()
					// warm: load script / open connections
					if err := wr(ctx, 0, 1, 1); err != nil {
						b.Fatal(err)
					}
					if err := wr(ctx, 1, 1, 1); err != nil {
						b.Fatal(err)
					}
					runPar(b, g, n, func(w, i int) error {
						return wr(ctx, w, i+2, n)
					})
				})
			}
		}
	}
}

func check(v int) {
	if v != batchSize {
		panic(fmt.Sprintf("bad value len %d", v))
	}
	sink.Add(int64(v))
}

func BenchmarkXRange(b *testing.B) {
	preload(b)
	type reader func(ctx context.Context, start string) (int, error)
	ctx := context.Background()
	variants := []struct {
		name string
		mk   func(b *testing.B) (reader, func())
	}{
		{"rueidis/typed", func(b *testing.B) (reader, func()) {
			c := newRueidis(b, false)
			return func(ctx context.Context, start string) (int, error) {
				es, err := c.Do(ctx, c.B().Xrange().Key(readKey).Start(start).End("+").Count(64).Build()).AsXRange()
				for _, e := range es {
					check(len(e.FieldValues["b"]))
				}
				return len(es), err
			}, c.Close
		}},
		{"rueidis/raw", func(b *testing.B) (reader, func()) {
			c := newRueidis(b, false)
			return rueidisRaw(c), c.Close
		}},
		{"rueidisAlways/raw", func(b *testing.B) (reader, func()) {
			c := newRueidis(b, true)
			return rueidisRaw(c), c.Close
		}},
		{"goredis/typed", func(b *testing.B) (reader, func()) {
			c := newGoRedis(b)
			return func(ctx context.Context, start string) (int, error) {
				ms, err := c.XRangeN(ctx, readKey, start, "+", 64).Result()
				for _, m := range ms {
					s, _ := m.Values["b"].(string)
					_ = unsafe.Slice(unsafe.StringData(s), len(s)) // zero-copy view; []byte(s) would copy
					check(len(s))
				}
				return len(ms), err
			}, func() { c.Close() }
		}},
		{"goredis/rawbuf", func(b *testing.B) (reader, func()) {
			c := newGoRedis(b)
			return func(ctx context.Context, start string) (int, error) {
				// One reusable buffer per call site would be per-goroutine in real code; here per call
				// is from a pool to keep it zero-alloc in steady state.
				buf := bufPool.Get().(*bytes.Buffer)
				defer bufPool.Put(buf)
				buf.Reset()
				if err := c.DoRawWriteTo(ctx, buf, "XRANGE", readKey, start, "+", "COUNT", 64).Err(); err != nil {
					return 0, err
				}
				n := 0
				err := parseXRange(buf.Bytes(), func(id, v []byte) { n++; check(len(v)) })
				return n, err
			}, func() { c.Close() }
		}},
	}
	for _, v := range variants {
		for _, g := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/g=%d", v.name, g), func(b *testing.B) {
				rd, closer := v.mk(b)
				defer closer()
				if _, err := rd(ctx, "1-0"); err != nil {
					b.Fatal(err)
				}
				runPar(b, g, 64, func(w, i int) error {
					s, _ := readStart(w, g, i)
					n, err := rd(ctx, s)
					if err == nil && n != 64 {
						err = fmt.Errorf("got %d entries from %s", n, s)
					}
					return err
				})
			})
		}
	}
}

func rueidisRaw(c rueidis.Client) func(ctx context.Context, start string) (int, error) {
	return func(ctx context.Context, start string) (int, error) {
		entries, err := c.Do(ctx, c.B().Xrange().Key(readKey).Start(start).End("+").Count(64).Build()).ToArray()
		if err != nil {
			return 0, err
		}
		for i := range entries {
			kv, err := entries[i].ToArray() // [id, [f v ...]]
			if err != nil {
				return 0, err
			}
			id, _ := kv[0].ToString() // no copy: string aliases the reply buffer
			_ = id
			fv, err := kv[1].ToArray()
			if err != nil {
				return 0, err
			}
			for j := 0; j+1 < len(fv); j += 2 {
				if f, _ := fv[j].ToString(); f == "b" {
					v, _ := fv[j+1].AsBytes() // no copy: immutable []byte view
					check(len(v))
				}
			}
		}
		return len(entries), nil
	}
}

func BenchmarkXRevRange(b *testing.B) {
	preload(b)
	ctx := context.Background()
	for _, cli := range []string{"rueidis", "goredis"} {
		for _, g := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/g=%d", cli, g), func(b *testing.B) {
				var rd func(off string) error
				switch cli {
				case "rueidis":
					c := newRueidis(b, false)
					defer c.Close()
					rd = func(off string) error {
						es, err := c.Do(ctx, c.B().Xrevrange().Key(readKey).End(off).Start("-").Count(1).Build()).ToArray()
						if err == nil && len(es) != 1 {
							err = fmt.Errorf("got %d", len(es))
						}
						return err
					}
				case "goredis":
					c := newGoRedis(b)
					defer c.Close()
					rd = func(off string) error {
						ms, err := c.XRevRangeN(ctx, readKey, off, "-", 1).Result()
						if err == nil && len(ms) != 1 {
							err = fmt.Errorf("got %d", len(ms))
						}
						return err
					}
				}
				if err := rd("1-0"); err != nil {
					b.Fatal(err)
				}
				runPar(b, g, 1, func(w, i int) error {
					return rd(strconv.Itoa((w*4999+i*7)%readEntries+1) + "-0")
				})
			})
		}
	}
}
