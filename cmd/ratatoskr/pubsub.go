package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

type pubCmd struct {
	serverFlag
	compressionFlag
	Topic     string   `arg:"" help:"Topic to publish to."`
	Messages  []string `arg:"" optional:"" help:"Messages; without any, each line of standard input is one."`
	Key       string   `help:"Key of every message (routes them to one partition)."`
	Partition int      `default:"-1" help:"Partition to publish to; -1 lets the key or the broker choose."`
}

// Run publishes asynchronously (the client batches) and exits only after
// Flush has seen every message acknowledged.
func (c *pubCmd) Run(ctx context.Context) error {
	var asyncErr error
	var mu sync.Mutex
	cl, err := c.dial(ctx, client.WithCompression(c.codec()), client.WithErrorHandler(func(err error) {
		mu.Lock()
		if asyncErr == nil {
			asyncErr = err
		}
		mu.Unlock()
	}))
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	var opts []client.PublishOption
	if c.Partition >= 0 {
		opts = append(opts, client.ToPartition(c.Partition))
	}
	var key []byte
	if c.Key != "" {
		key = []byte(c.Key)
	}
	n := 0
	publish := func(v []byte) error {
		n++
		return cl.PublishAsync(ctx, c.Topic, client.Message{Key: key, Value: v}, opts...)
	}
	if len(c.Messages) > 0 {
		for _, m := range c.Messages {
			if err := publish([]byte(m)); err != nil {
				return err
			}
		}
	} else if err := eachLine(os.Stdin, cl.MaxMessageBytes(), publish); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, c.Timeout+time.Duration(n/100_000)*time.Second)
	defer cancel()
	if err := cl.Flush(fctx); err != nil {
		return fmt.Errorf("publishing to %s: %w", c.Topic, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return asyncErr
}

// eachLine calls fn with every line of r, without its line ending. The
// slice is reused after fn returns (PublishAsync copies it).
func eachLine(r io.Reader, maxLine int, fn func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxLine+2)
	for sc.Scan() {
		line := sc.Bytes()
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return fmt.Errorf("a line of standard input is longer than the broker's %d-byte message limit", maxLine)
	}
	return sc.Err()
}

type subCmd struct {
	serverFlag
	Topic        string `arg:"" help:"Topic to subscribe to."`
	Count        int    `short:"n" default:"0" help:"Exit after this many messages; 0 runs until interrupted. A group member commits no message it did not print."`
	Partition    int    `default:"-1" help:"Partition to follow; -1 follows all. Not with --group, which assigns the partitions."`
	From         string `default:"latest" help:"Where to start: latest, earliest, an offset, or an RFC 3339 time. With --group: where a partition the group never committed starts."`
	PrintOffsets bool   `help:"Print each message as '<partition> <offset> <value>'."`

	groupFlags `embed:""`
}

// parsePosition reads a position flag (--from, --to).
func parsePosition(flag, s string) (client.Position, error) {
	switch s {
	case "latest", "":
		return client.Latest, nil
	case "earliest":
		return client.Earliest, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return client.AtOffset(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return client.AtTime(t), nil
	}
	return client.Position{}, fmt.Errorf("%s %q: want latest, earliest, an offset or an RFC 3339 time", flag, s)
}

// Run prints payloads as they arrive. Output is buffered and flushed every
// 50 ms or when the count is reached, so a fast stream costs few writes.
func (c *subCmd) Run(ctx context.Context) error {
	from, err := parsePosition("--from", c.From)
	if err != nil {
		return err
	}
	if err := c.check(c.Partition); err != nil {
		return err
	}
	out := newLineWriter(os.Stdout, c.PrintOffsets)
	if c.Group != "" {
		return c.runGroup(ctx, from, out)
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	done := make(chan struct{})
	var once sync.Once
	seen := 0
	handler := func(d *client.Delivery) {
		if c.Count > 0 && seen >= c.Count {
			return
		}
		seen++
		out.record(d.Partition, d.Offset, d.Value)
		if c.Count > 0 && seen == c.Count {
			once.Do(func() { close(done) })
		}
	}
	opts := []client.SubscribeOption{client.StartAt(from)}
	if c.Partition >= 0 {
		opts = append(opts, client.FromPartition(c.Partition))
	}
	sctx, cancel := context.WithTimeout(ctx, c.Timeout)
	sub, err := cl.Subscribe(sctx, c.Topic, handler, opts...)
	cancel()
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	defer out.flush()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return nil
		case <-sub.Done():
			if err := cl.Err(); err != nil {
				return err
			}
			return nil
		case <-tick.C:
			out.flush()
		}
	}
}

// lockedWriter is sub's buffered standard output, shared by the handler
// and the goroutine that flushes it.
type lockedWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	offsets bool // prefix each value with its partition and offset
	scratch []byte
}

func newLineWriter(w io.Writer, offsets bool) *lockedWriter {
	return &lockedWriter{w: bufio.NewWriterSize(w, 256<<10), offsets: offsets}
}

// record writes one message's line.
func (l *lockedWriter) record(partition int32, offset int64, value []byte) {
	l.mu.Lock()
	if l.offsets {
		b := strconv.AppendInt(l.scratch[:0], int64(partition), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, offset, 10)
		b = append(b, ' ')
		l.scratch = b
		_, _ = l.w.Write(b)
	}
	_, _ = l.w.Write(value)
	_ = l.w.WriteByte('\n')
	l.mu.Unlock()
}

func (l *lockedWriter) flush() {
	l.mu.Lock()
	_ = l.w.Flush()
	l.mu.Unlock()
}

// mustFlush flushes before a group member confirms what it printed. On a
// write error it exits at once: leaving without a commit is safe, while
// committing what may not have been written would lose it.
func (l *lockedWriter) mustFlush() {
	l.mu.Lock()
	err := l.w.Flush()
	l.mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ratatoskr: writing standard output:", err, "(exiting without a commit)")
		os.Exit(exitFailed)
	}
}
