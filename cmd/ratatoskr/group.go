package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Consumer groups: `sub --group` makes the CLI a member of a group, and
// `group list|describe|reset` administer the groups.

// groupFlags are sub's flags for consuming as a member of a group.
type groupFlags struct {
	Group          string     `group:"Consumer group" placeholder:"NAME" help:"Consume as a member of this group: the broker shares the topic's partitions among the members and keeps the group's offsets."`
	Ack            string     `group:"Consumer group" placeholder:"MODE" help:"none (at most once), offset (at least once: commits offsets; the default) or message (each message acked on its own, redelivered until it is)."`
	CommitInterval duration   `group:"Consumer group" default:"1s" help:"How often --ack offset commits; 0 commits only when partitions move and on exit."`
	SessionTimeout duration   `group:"Consumer group" default:"10s" help:"The broker gives the member's partitions to the others when it has not heard from it for this long (1s..5m)."`
	AckWait        duration   `group:"Consumer group" help:"--ack message: redeliver a message not acked within this; 0 takes the default (30s)."`
	MaxDeliveries  int        `group:"Consumer group" help:"--ack message: deliveries before a message goes to the dead-letter topic; 0 takes the default (5)."`
	MaxUnacked     int        `group:"Consumer group" help:"--ack message: messages delivered to the member and not yet acked; 0 takes the default (10000)."`
	Backoff        []duration `group:"Consumer group" sep:"," placeholder:"DURATION" help:"--ack message: delays before the first, second, ... redelivery, comma separated; the last one repeats."`
	DLQ            string     `group:"Consumer group" name:"dlq" placeholder:"TOPIC" help:"--ack message: the dead-letter topic; default <topic>.dlq."`
}

// ackMode is --ack, whose default depends on --group.
func (f *groupFlags) ackMode() client.AckMode {
	if f.Ack == "" {
		return client.AckOffset
	}
	m, _ := client.ParseAckMode(f.Ack) // check refused a bad one
	return m
}

func (f *groupFlags) messageFlags() bool {
	return f.AckWait != 0 || f.MaxDeliveries != 0 || f.MaxUnacked != 0 || len(f.Backoff) > 0 || f.DLQ != ""
}

// check refuses flag combinations that would be silently ignored.
func (f *groupFlags) check(partition int) error {
	if f.Group == "" {
		if f.Ack != "" || f.messageFlags() {
			return errors.New("--ack, --ack-wait, --max-deliveries, --max-unacked, --backoff and --dlq need --group")
		}
		return nil
	}
	if _, err := client.ParseAckMode(f.Ack); f.Ack != "" && err != nil {
		return fmt.Errorf("--ack %q: want none, offset or message", f.Ack)
	}
	switch {
	case partition >= 0:
		return errors.New("--partition cannot be used with --group: the group assigns the partitions to its members")
	case f.ackMode() != client.AckMessage && f.messageFlags():
		return errors.New("--ack-wait, --max-deliveries, --max-unacked, --backoff and --dlq apply only to --ack message")
	case f.CommitInterval < 0:
		return errors.New("--commit-interval must not be negative; 0 turns auto-commit off")
	}
	return nil
}

func (f *groupFlags) config(topic string, from client.Position) client.GroupConfig {
	cfg := client.GroupConfig{Group: f.Group, Topic: topic, Mode: f.ackMode(), Start: from,
		SessionTimeout: f.SessionTimeout.D(), AutoCommitInterval: f.CommitInterval.D(), AckWait: f.AckWait.D(),
		MaxDeliveries: f.MaxDeliveries, MaxUnacked: f.MaxUnacked, DeadLetterTopic: f.DLQ}
	for _, d := range f.Backoff {
		cfg.Backoff = append(cfg.Backoff, d.D())
	}
	if f.CommitInterval == 0 {
		cfg.AutoCommitInterval = -1
	}
	return cfg
}

// runGroup is `sub --group`. What the member confirms has been written to
// standard output first: in offset mode the output is flushed before every
// commit (BeforeCommit), in message mode after each message, before its
// ack. A write error exits at once, so nothing unwritten is confirmed.
func (c *subCmd) runGroup(ctx context.Context, from client.Position, out *lockedWriter) error {
	cfg := c.config(c.Topic, from)
	if cfg.Mode == client.AckOffset {
		cfg.BeforeCommit = out.mustFlush
	}
	lim := newCountLimit(c.Count)
	cfg.Handler = func(m *client.GroupMessage) error {
		lim.take()
		out.record(&m.Delivery)
		if cfg.Mode == client.AckMessage {
			out.mustFlush()
		}
		lim.taken()
		return nil
	}
	tlsOpts, err := c.clientOptions()
	if err != nil {
		return err
	}
	jctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
	gc, err := client.JoinGroup(jctx, c.addrs(), cfg, append(tlsOpts, client.WithName("ratatoskr-cli"),
		client.WithErrorHandler(func(err error) { fmt.Fprintln(os.Stderr, "ratatoskr:", err) }))...)
	cancel()
	if err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-lim.done:
			return c.leave(gc, lim, out)
		case <-ctx.Done():
			return c.leave(gc, lim, out)
		case <-gc.Done():
			out.flush()
			return nil
		case <-tick.C:
			out.flush()
		}
	}
}

// leave closes the member, which commits what was printed and leaves the
// group so that its partitions move at once. Close waits for the handler,
// though, and a handler holding a message past --count never returns (see
// countLimit): then commit the batches handled in full, and exit. The
// broker frees the partitions when the connection ends, and what was
// printed after the commit goes to the next owner again.
func (c *subCmd) leave(gc *client.GroupConsumer, lim *countLimit, out *lockedWriter) error {
	out.mustFlush()
	closed := make(chan struct{})
	go func() {
		_ = gc.Close()
		close(closed)
	}()
	select {
	case <-closed:
		out.mustFlush()
		return nil
	case <-lim.over:
	}
	out.mustFlush()
	if c.ackMode() == client.AckOffset {
		ctx, cancel := context.WithTimeout(context.Background(), min(c.Timeout.D(), 2*time.Second))
		defer cancel()
		if err := gc.Commit(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "ratatoskr: commit on exit:", err)
		}
	}
	return nil
}

// countLimit is -n for a group member. A handler that returns has handled
// its message, and the member commits (or acks) past it whether or not it
// was printed. So the handler of a message past the count does not return:
// it reports over and waits for the process to exit.
type countLimit struct {
	n, seen  int
	done     chan struct{} // closed at the count; nil without one
	over     chan struct{} // closed when a message past the count arrived
	overOnce sync.Once
}

func newCountLimit(n int) *countLimit {
	l := &countLimit{n: n, over: make(chan struct{})}
	if n > 0 {
		l.done = make(chan struct{})
	}
	return l
}

// take blocks for good once the count is reached.
func (l *countLimit) take() {
	if l.n > 0 && l.seen >= l.n {
		l.overOnce.Do(func() { close(l.over) })
		select {}
	}
}

// taken counts a printed message.
func (l *countLimit) taken() {
	l.seen++
	if l.n > 0 && l.seen == l.n {
		close(l.done)
	}
}

type groupCmd struct {
	List     groupListCmd     `cmd:"" help:"List consumer groups."`
	Describe groupDescribeCmd `cmd:"" help:"Show a group's members and each partition's owner, committed offset and lag."`
	Reset    groupResetCmd    `cmd:"" help:"Move a group's committed offsets; the group must have no members."`
}

type groupListCmd struct {
	serverFlag
	outputFlag
}

func (c *groupListCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		groups, err := cl.ListGroups(ctx)
		if err != nil {
			return err
		}
		if c.json() {
			out := make([]jsonGroupSummary, len(groups))
			for i, g := range groups {
				out[i] = jsonGroupSummary{Group: g.Group, Topic: g.Topic, Members: int(g.Members)}
			}
			return printJSON(out)
		}
		rows := [][]any{{"GROUP", "TOPIC", "MEMBERS"}}
		for _, g := range groups {
			rows = append(rows, []any{g.Group, g.Topic, g.Members})
		}
		return printTable(rows)
	})
}

type groupDescribeCmd struct {
	serverFlag
	outputFlag
	Name string `arg:"" help:"Group name."`
}

func (c *groupDescribeCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		info, err := cl.DescribeGroup(ctx, c.Name)
		if err != nil {
			return err
		}
		if c.json() {
			return printJSON(groupJSON(info))
		}
		printGroup(info)
		return nil
	})
}

// printGroup writes describe's output: settings, members, a row per
// partition, and the total lag.
func printGroup(info client.GroupInfo) {
	fmt.Printf("group %s\n", info.Group)
	fmt.Printf("  topic = %s\n", info.Topic)
	fmt.Printf("  mode = %s\n", info.Mode)
	fmt.Printf("  generation = %d\n", info.Generation)
	fmt.Printf("  members = %d\n", len(info.Members))
	for _, m := range info.Members {
		fmt.Printf("    %s\n", m)
	}
	rows := make([][]any, 0, 1+len(info.Partitions))
	rows = append(rows, []any{"PARTITION", "OWNER", "COMMITTED", "END", "LAG", "PENDING"})
	uncommitted := 0
	for _, p := range info.Partitions {
		pending := "-"
		if info.Mode == client.AckMessage {
			pending = fmt.Sprint(p.Pending)
		}
		if p.Committed < 0 {
			uncommitted++
		}
		rows = append(rows, []any{p.Partition, orDash(p.Owner), offsetOrDash(p.Committed), p.End,
			offsetOrDash(p.Lag), pending})
	}
	_ = printTable(rows)
	fmt.Printf("total lag %d", info.Lag())
	if uncommitted > 0 {
		fmt.Printf(" (%d of %d partitions without a committed offset)", uncommitted, len(info.Partitions))
	}
	fmt.Println()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// offsetOrDash prints -1, "none", as "-".
func offsetOrDash(n int64) any {
	if n < 0 {
		return "-"
	}
	return n
}

type groupResetCmd struct {
	serverFlag
	Name   string    `arg:"" help:"Group name."`
	To     startFlag `required:"" placeholder:"TARGET" help:"Where the committed offsets go. For every partition: earliest, latest, an offset, -N (N before each partition's end), a duration back from now (1h, 7d) or a time (RFC 3339, or YYYY-MM-DD: midnight local time). For some partitions: PARTITION=POSITION pairs, comma separated (0=100,1=earliest,2=-10); the others keep theirs."`
	DryRun bool      `help:"Print what each partition's committed offset would become, and change nothing."`
}

// resetPlan is a parsed --to: one target for every partition, or one per
// listed partition.
type resetPlan struct {
	all   *startSpec
	parts map[int]startSpec
}

// parseResetTargets reads --to.
func parseResetTargets(s string, now time.Time) (resetPlan, error) {
	if !strings.Contains(s, "=") {
		st, err := parseStart("--to", s, now)
		return resetPlan{all: &st}, err
	}
	plan := resetPlan{parts: map[int]startSpec{}}
	for pair := range strings.SplitSeq(s, ",") {
		ps, pos, _ := strings.Cut(pair, "=")
		p, err := strconv.Atoi(strings.TrimSpace(ps))
		if err != nil || p < 0 {
			return plan, fmt.Errorf("--to %q: %q is not PARTITION=POSITION with a partition number", s, pair)
		}
		if _, dup := plan.parts[p]; dup {
			return plan, fmt.Errorf("--to %q: partition %d is given twice", s, p)
		}
		if plan.parts[p], err = parseStart("--to", strings.TrimSpace(pos), now); err != nil {
			return plan, fmt.Errorf("partition %d: %w", p, err)
		}
	}
	return plan, nil
}

// Validate runs at parse time: a bad --to is a usage error.
func (c *groupResetCmd) Validate() error {
	_, err := parseResetTargets(string(c.To), time.Now())
	return err
}

func (c *groupResetCmd) Run(ctx context.Context) error {
	plan, err := parseResetTargets(string(c.To), time.Now())
	if err != nil {
		return err
	}
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		before, err := cl.DescribeGroup(ctx, c.Name)
		if err != nil {
			return err
		}
		if c.DryRun {
			return c.dryRun(ctx, cl, before, plan)
		}
		if err := c.reset(ctx, cl, before, plan); err != nil {
			return err
		}
		after, err := cl.DescribeGroup(ctx, c.Name)
		if err != nil {
			return err
		}
		fmt.Printf("reset group %s (topic %s)\n", c.Name, before.Topic)
		return printResetTable(before, func(p int32) (string, bool) {
			for _, ap := range after.Partitions {
				if ap.Partition == p {
					return fmt.Sprint(offsetOrDash(ap.Committed)), true
				}
			}
			return "-", false
		})
	})
}

// reset asks the broker. A single broker-resolved target goes as one
// whole-group reset; -N and per-partition targets go as a list of offsets
// and positions.
func (c *groupResetCmd) reset(ctx context.Context, cl *client.Client, g client.GroupInfo, plan resetPlan) error {
	var err error
	if plan.all != nil && plan.all.back == 0 {
		err = cl.ResetGroup(ctx, c.Name, plan.all.pos)
	} else {
		var to map[int]client.Position
		if to, err = c.positions(ctx, cl, g, plan); err == nil {
			err = cl.ResetGroupPartitions(ctx, c.Name, to)
			if errors.Is(err, wire.ErrMalformed) {
				err = fmt.Errorf("the broker predates per-partition resets (-N or PARTITION=POSITION); nothing was moved: %w", err)
			}
		}
	}
	if errors.Is(err, client.ErrGroupActive) {
		return fmt.Errorf("group %s has members; stop them first", c.Name)
	}
	return err
}

// positions turns a plan into a position per partition, resolving -N
// against each partition's end and start.
func (c *groupResetCmd) positions(ctx context.Context, cl *client.Client, g client.GroupInfo, plan resetPlan) (map[int]client.Position, error) {
	targets := plan.parts
	if plan.all != nil {
		targets = map[int]startSpec{}
		for _, p := range g.Partitions {
			targets[int(p.Partition)] = *plan.all
		}
	}
	var info client.TopicInfo
	to := make(map[int]client.Position, len(targets))
	for p, st := range targets {
		if st.back == 0 {
			to[p] = st.pos
			continue
		}
		if info.Name == "" {
			var err error
			if info, err = cl.DescribeTopic(ctx, g.Topic); err != nil {
				return nil, err
			}
		}
		if p >= len(info.Partitions) {
			return nil, fmt.Errorf("topic %s has no partition %d (it has %d)", g.Topic, p, len(info.Partitions))
		}
		pi := info.Partitions[p]
		to[p] = client.AtOffset(max(pi.StartOffset, pi.EndOffset-st.back))
	}
	return to, nil
}

// dryRun prints what a reset would make of each partition's committed
// offset, resolving each target as the broker would (a Fetch resolves a
// position the same way), and changes nothing.
func (c *groupResetCmd) dryRun(ctx context.Context, cl *client.Client, g client.GroupInfo, plan resetPlan) error {
	to, err := c.positions(ctx, cl, g, plan)
	if err != nil {
		return err
	}
	resolved := make(map[int32]string, len(to))
	for p, pos := range to {
		if p >= len(g.Partitions) {
			return fmt.Errorf("topic %s has no partition %d (it has %d)", g.Topic, p, len(g.Partitions))
		}
		off, err := resolvePosition(ctx, cl, g.Topic, p, pos)
		if err != nil {
			return withContext(err, "partition %d", p)
		}
		resolved[int32(p)] = strconv.FormatInt(off, 10)
	}
	fmt.Printf("dry run: reset group %s (topic %s) to %s would move:\n", c.Name, g.Topic, c.To)
	if err := printResetTable(g, func(p int32) (string, bool) { v, ok := resolved[p]; return v, ok }); err != nil {
		return err
	}
	if n := len(g.Members); n > 0 {
		fmt.Printf("the group has %s: the reset itself would be refused until they stop\n", plural(n, "member"))
	}
	fmt.Println("nothing was changed")
	return nil
}

// resolvePosition is the offset pos stands for in a partition: the first
// offset a Fetch from it returns, or, when there is nothing to return, the
// offset the Fetch resolved to.
func resolvePosition(ctx context.Context, cl *client.Client, topic string, p int, pos client.Position) (int64, error) {
	f, err := cl.Fetch(ctx, topic, p, pos, client.MaxBytes(1))
	if err != nil {
		return 0, err
	}
	if len(f.Messages) > 0 {
		return f.Messages[0].Offset, nil
	}
	return f.Next, nil
}

// printResetTable writes each partition's committed offset before and
// after (a partition left as it is shows "unchanged").
func printResetTable(g client.GroupInfo, after func(p int32) (string, bool)) error {
	rows := make([][]any, 0, 1+len(g.Partitions))
	rows = append(rows, []any{"PARTITION", "COMMITTED", "NEW", "END"})
	for _, p := range g.Partitions {
		v, ok := after(p.Partition)
		if !ok {
			v = "unchanged"
		}
		rows = append(rows, []any{p.Partition, offsetOrDash(p.Committed), v, p.End})
	}
	return printTable(rows)
}
