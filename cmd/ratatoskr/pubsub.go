package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

type pubCmd struct {
	serverFlag
	compressionFlag
	Topic     string   `arg:"" help:"Topic to publish to."`
	Messages  []string `arg:"" optional:"" help:"Messages; without any (and without --file), each line of standard input is one."`
	File      string   `short:"f" placeholder:"PATH" help:"Send the whole file as one message ('-': all of standard input)."`
	Key       string   `help:"Key of every message (routes them to one partition)."`
	Header    []string `short:"H" sep:"none" placeholder:"KEY=VALUE" help:"A header of every message; repeat for more."`
	Partition int      `default:"-1" help:"Partition to publish to; -1 lets the key or the broker choose."`
	Quiet     bool     `short:"q" help:"Print no summary. Without it, pub prints on standard error what was stored: the count, the partitions and their offsets."`
}

// Validate runs at parse time, so a wrong combination is a usage error.
func (c *pubCmd) Validate() error {
	if c.File != "" && len(c.Messages) > 0 {
		return errors.New("--file and message arguments cannot be used together")
	}
	_, err := parseHeaders(c.Header)
	return err
}

// parseHeaders reads --header KEY=VALUE flags.
func parseHeaders(flags []string) ([]client.Header, error) {
	var hs []client.Header
	for _, h := range flags {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--header %q: want KEY=VALUE", h)
		}
		hs = append(hs, client.Header{Key: k, Value: []byte(v)})
	}
	return hs, nil
}

// publisher is what pub needs of its client: a Client, or with several
// --server nodes a Cluster.
type publisher interface {
	PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error
	Flush(ctx context.Context) error
	MaxMessageBytes() int
	Close() error
}

// dialPublisher connects pub's client.
func (c *pubCmd) dialPublisher(ctx context.Context, opts ...client.Option) (publisher, error) {
	if c.cluster() {
		return c.dialCluster(ctx, opts...)
	}
	return c.dial(ctx, opts...)
}

// Run publishes asynchronously (the client batches) and exits only after
// Flush has seen every message acknowledged. It reports what the broker
// acknowledged, also when it stops early.
func (c *pubCmd) Run(ctx context.Context) error {
	tally := newPubTally()
	cl, err := c.dialPublisher(ctx, client.WithCompression(c.codec()), client.WithAckHandler(tally.acked), client.WithErrorHandler(tally.failed))
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	done := make(chan error, 1)
	go func() { done <- c.publishAll(ctx, cl, tally) }()
	select {
	case err = <-done:
	case <-ctx.Done(): // stdin may be blocked in a read that never returns
		err = ctx.Err()
	}
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, c.Timeout.D()+time.Duration(tally.sentCount()/100_000)*time.Second)
		err = cl.Flush(fctx)
		cancel()
		if err == nil {
			err = tally.err()
		}
	}
	if err == nil {
		if !c.Quiet {
			fmt.Fprintln(os.Stderr, tally.summary(c.Topic))
		}
		return nil
	}
	// What was sent may still be acknowledged: give it a moment, so the
	// count says what is known to be stored.
	gctx, cancel := context.WithTimeout(context.Background(), min(c.Timeout.D(), 2*time.Second))
	_ = cl.Flush(gctx)
	cancel()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "ratatoskr: interrupted:", tally.partial(true))
		return err
	}
	werr := withContext(err, "publishing to %s", c.Topic)
	werr.tail = "; " + tally.partial(false)
	return werr
}

// publishAll sends the messages: the arguments, the file, or each line of
// standard input.
func (c *pubCmd) publishAll(ctx context.Context, cl publisher, tally *pubTally) error {
	var opts []client.PublishOption
	if c.Partition >= 0 {
		opts = append(opts, client.ToPartition(c.Partition))
	}
	headers, _ := parseHeaders(c.Header) // Validate checked them
	var key []byte
	if c.Key != "" {
		key = []byte(c.Key)
	}
	publish := func(v []byte) error {
		tally.sent()
		return cl.PublishAsync(ctx, c.Topic, client.Message{Key: key, Value: v, Headers: headers}, opts...)
	}
	switch {
	case c.File != "":
		v, err := readMessageFile(c.File, cl.MaxMessageBytes())
		if err != nil {
			return err
		}
		return publish(v)
	case len(c.Messages) > 0:
		for _, m := range c.Messages {
			if err := publish([]byte(m)); err != nil {
				return err
			}
		}
		return nil
	}
	return eachLine(os.Stdin, cl.MaxMessageBytes(), publish)
}

// readMessageFile reads a whole file ("-": standard input) as one message,
// refusing one the broker would refuse.
func readMessageFile(path string, limit int) ([]byte, error) {
	f := os.Stdin
	if path != "-" {
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
	}
	v, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(v) > limit {
		return nil, fmt.Errorf("%s is larger than the broker's %s message limit", path, byteSize(limit))
	}
	return v, nil
}

// pubTally counts what pub sent and what the broker acknowledged where.
type pubTally struct {
	mu     sync.Mutex
	sentN  int
	ackedN int
	parts  map[int32]*offsetRange
	first  error // the first asynchronous failure
}

type offsetRange struct{ lo, hi int64 }

func newPubTally() *pubTally { return &pubTally{parts: map[int32]*offsetRange{}} }

func (t *pubTally) sent() {
	t.mu.Lock()
	t.sentN++
	t.mu.Unlock()
}

func (t *pubTally) sentCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sentN
}

// acked is the client's ack handler.
func (t *pubTally) acked(a client.BatchAck) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ackedN += a.Count
	last := a.BaseOffset + int64(a.Count) - 1
	if r := t.parts[a.Partition]; r != nil {
		r.lo, r.hi = min(r.lo, a.BaseOffset), max(r.hi, last)
	} else {
		t.parts[a.Partition] = &offsetRange{a.BaseOffset, last}
	}
}

// failed is the client's error handler.
func (t *pubTally) failed(err error) {
	t.mu.Lock()
	if t.first == nil {
		t.first = err
	}
	t.mu.Unlock()
}

func (t *pubTally) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first
}

// summary is the line of a run that succeeded: count, partitions and
// offsets ("published 3 messages to orders: partition 0, offsets 10-12").
func (t *pubTally) summary(topic string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("published %s to %s%s", plural(t.ackedN, "message"), topic, t.where())
}

// partial is the account of a run that stopped early. Messages sent when
// an interrupt came and not acknowledged since may or may not be stored.
func (t *pubTally) partial(interrupted bool) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := fmt.Sprintf("%d of %s acknowledged%s", t.ackedN, plural(t.sentN, "message"), t.where())
	if n := t.sentN - t.ackedN; n > 0 && interrupted {
		out += fmt.Sprintf("; %d sent without an acknowledgement may or may not be stored", n)
	}
	return out
}

// maxListed bounds the partitions a summary lists one by one.
const maxListed = 8

// where lists the partitions and offset ranges acknowledged. t.mu held.
func (t *pubTally) where() string {
	ids := slices.Sorted(maps.Keys(t.parts))
	switch len(ids) {
	case 0:
		return ""
	case 1:
		r := t.parts[ids[0]]
		if r.lo == r.hi {
			return fmt.Sprintf(": partition %d, offset %d", ids[0], r.lo)
		}
		return fmt.Sprintf(": partition %d, offsets %d-%d", ids[0], r.lo, r.hi)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ": %d partitions, offsets", len(ids))
	for i, id := range ids {
		if i == maxListed {
			fmt.Fprintf(&b, " and %d more", len(ids)-maxListed)
			break
		}
		r := t.parts[id]
		fmt.Fprintf(&b, " %d:%d-%d", id, r.lo, r.hi)
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
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
	Topic        string    `arg:"" help:"Topic to subscribe to."`
	Count        int       `short:"n" default:"0" help:"Exit after this many messages; 0 runs until interrupted. A group member commits no message it did not print."`
	Partition    int       `default:"-1" help:"Partition to follow; -1 follows all. Not with --group, which assigns the partitions."`
	From         startFlag `default:"latest" placeholder:"POSITION" help:"Where to start: latest, earliest, an offset (1200), -N (N before the end of each partition: -10), a duration back from now (1h, 7d), or a time (RFC 3339, or YYYY-MM-DD: midnight local time). With --group: where a partition the group never committed starts (not -N)."`
	Format       string    `placeholder:"TEMPLATE" help:"${format_help}"`
	Output       string    `short:"o" enum:"text,json" default:"text" help:"${output_help}"`
	PrintOffsets bool      `help:"Print each message as '<partition> <offset> <value>': --format '%p %o %v'."`

	groupFlags `embed:""`
}

// startFlag is the text of a --from or --to. kong reads "-10" after a
// flag as a short flag; here it is a value.
type startFlag string

func (s *startFlag) Decode(ctx *kong.DecodeContext) error {
	t := ctx.Scan.Pop()
	v, ok := t.Value.(string)
	if !ok || !t.IsValue() && !isNegativeNumber(v) {
		return fmt.Errorf("expected a position but got %q", t)
	}
	*s = startFlag(v)
	return nil
}

func isNegativeNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil && strings.HasPrefix(s, "-")
}

// startSpec is a parsed --from or --to: a position the broker resolves,
// or a count back from each partition's end, which the CLI resolves from
// the partitions' end offsets.
type startSpec struct {
	pos  client.Position
	back int64 // > 0: this many messages before the end of each partition
}

// parseStart reads a position flag (--from, --to); durations count back
// from now.
func parseStart(flag, s string, now time.Time) (startSpec, error) {
	switch s {
	case "latest", "":
		return startSpec{pos: client.Latest}, nil
	case "earliest":
		return startSpec{pos: client.Earliest}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return startSpec{back: -n}, nil
		}
		return startSpec{pos: client.AtOffset(n)}, nil
	}
	if d, err := parseDuration(s); err == nil {
		if d <= 0 {
			return startSpec{}, fmt.Errorf("%s %q: a duration counts back from now, so it must be positive (1h is an hour ago)", flag, s)
		}
		return startSpec{pos: client.AtTime(now.Add(-d.D()))}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return startSpec{pos: client.AtTime(t)}, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return startSpec{pos: client.AtTime(t)}, nil
	}
	return startSpec{}, fmt.Errorf("%s %q: want latest, earliest, an offset, -N (before the end), a duration "+
		"(1h: an hour ago), an RFC 3339 time or a date (YYYY-MM-DD)", flag, s)
}

// Validate runs at parse time: a bad position or template is a usage
// error.
func (c *subCmd) Validate() error {
	from, err := parseStart("--from", string(c.From), time.Now())
	if err != nil {
		return err
	}
	switch {
	case from.back > 0 && c.Group != "":
		return errors.New("--from -N cannot be used with --group: give latest, earliest, an offset or a time")
	case c.Format != "" && c.PrintOffsets, c.Format != "" && c.Output == "json", c.PrintOffsets && c.Output == "json":
		return errors.New("--format, --print-offsets and --output json each choose the output: give one")
	}
	_, err = c.formatter()
	return err
}

// formatter is how each message is printed.
func (c *subCmd) formatter() (formatFunc, error) {
	switch {
	case c.Output == "json":
		return jsonLine, nil
	case c.PrintOffsets:
		return compileFormat("%p %o %v")
	case c.Format != "":
		return compileFormat(c.Format)
	}
	return valueOnly, nil
}

// Run prints messages as they arrive. Output is buffered and flushed every
// 50 ms or when the count is reached, so a fast stream costs few writes.
func (c *subCmd) Run(ctx context.Context) error {
	from, err := parseStart("--from", string(c.From), time.Now())
	if err != nil {
		return err
	}
	if err := c.check(c.Partition); err != nil {
		return err
	}
	format, err := c.formatter()
	if err != nil {
		return err
	}
	out := newLineWriter(os.Stdout, format)
	if c.Group != "" {
		return c.runGroup(ctx, from.pos, out)
	}
	cl, err := c.dialSubscriber(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	done := make(chan struct{})
	var mu sync.Mutex
	seen := 0
	handler := func(d *client.Delivery) {
		mu.Lock() // one handler per partition subscription may run at once
		defer mu.Unlock()
		if c.Count > 0 && seen >= c.Count {
			return
		}
		seen++
		out.record(d)
		if c.Count > 0 && seen == c.Count {
			close(done)
		}
	}
	subs, err := c.subscribe(ctx, cl, from, handler)
	if err != nil {
		return err
	}
	ended := make(chan error, len(subs))
	for _, s := range subs {
		go func() { <-s.Done(); ended <- s.Err() }()
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
		case err := <-ended:
			return err
		case <-tick.C:
			out.flush()
		}
	}
}

// subscriber is what sub needs of its client: a Client, or with several
// --server nodes a Cluster.
type subscriber interface {
	Subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error)
	DescribeTopic(ctx context.Context, topic string) (client.TopicInfo, error)
	Close() error
}

// subscription is one of a subscriber's subscriptions.
type subscription interface {
	Done() <-chan struct{}
	// Err says why it ended, when it did other than by Unsubscribe.
	Err() error
}

// dialSubscriber connects sub's client.
func (c *subCmd) dialSubscriber(ctx context.Context) (subscriber, error) {
	if c.cluster() {
		cl, err := c.dialCluster(ctx)
		if err != nil {
			return nil, err
		}
		return clusterSubscriber{cl}, nil
	}
	cl, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	return clientSubscriber{cl}, nil
}

// clientSubscriber is a Client as a subscriber: its subscriptions end
// when the client stops, for the client's reason.
type clientSubscriber struct{ *client.Client }

func (c clientSubscriber) Subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	s, err := c.Client.Subscribe(ctx, topic, h, opts...)
	if err != nil {
		return nil, err
	}
	return clientSubscription{s, c.Client}, nil
}

type clientSubscription struct {
	*client.Subscription
	c *client.Client
}

func (s clientSubscription) Err() error { return s.c.Err() }

// clusterSubscriber is a Cluster as a subscriber.
type clusterSubscriber struct{ *client.Cluster }

func (c clusterSubscriber) Subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	s, err := c.Cluster.Subscribe(ctx, topic, h, opts...)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// subscribe starts the subscription: one, or with --from -N one per
// partition, each from its own offset.
func (c *subCmd) subscribe(ctx context.Context, cl subscriber, from startSpec, h func(*client.Delivery)) ([]subscription, error) {
	sctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
	defer cancel()
	if from.back == 0 {
		opts := []client.SubscribeOption{client.StartAt(from.pos)}
		if c.Partition >= 0 {
			opts = append(opts, client.FromPartition(c.Partition))
		}
		s, err := cl.Subscribe(sctx, c.Topic, h, opts...)
		if err != nil {
			return nil, err
		}
		return []subscription{s}, nil
	}
	info, err := cl.DescribeTopic(sctx, c.Topic)
	if err != nil {
		return nil, err
	}
	if c.Partition >= len(info.Partitions) {
		return nil, fmt.Errorf("topic %s has no partition %d (it has %d)", c.Topic, c.Partition, len(info.Partitions))
	}
	var subs []subscription
	for _, p := range info.Partitions {
		if c.Partition >= 0 && p.ID != c.Partition || c.Partition < 0 && p.State == client.PartitionOffline {
			continue
		}
		start := max(p.StartOffset, p.EndOffset-from.back)
		s, err := cl.Subscribe(sctx, c.Topic, h, client.FromPartition(p.ID), client.StartAt(client.AtOffset(start)))
		if err != nil {
			return nil, withContext(err, "partition %d from offset %d", p.ID, start)
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// lockedWriter is sub's buffered standard output, shared by the handler
// and the goroutine that flushes it.
type lockedWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	format  formatFunc
	scratch []byte
}

func newLineWriter(w io.Writer, format formatFunc) *lockedWriter {
	return &lockedWriter{w: bufio.NewWriterSize(w, 256<<10), format: format}
}

// record writes one message's line.
func (l *lockedWriter) record(d *client.Delivery) {
	l.mu.Lock()
	l.scratch = l.format(l.scratch[:0], d)
	_, _ = l.w.Write(l.scratch)
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
