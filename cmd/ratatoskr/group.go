package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
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
		out.record(m.Partition, m.Offset, m.Value)
		if cfg.Mode == client.AckMessage {
			out.mustFlush()
		}
		lim.taken()
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, c.Timeout.D())
	gc, err := client.JoinGroup(jctx, c.Server, cfg, client.WithName("ratatoskr-cli"),
		client.WithErrorHandler(func(err error) { fmt.Fprintln(os.Stderr, "ratatoskr:", err) }))
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
}

func (c *groupListCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		groups, err := cl.ListGroups(ctx)
		if err != nil {
			return err
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
	Name string `arg:"" help:"Group name."`
}

func (c *groupDescribeCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		info, err := cl.DescribeGroup(ctx, c.Name)
		if err != nil {
			return err
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
	Name string `arg:"" help:"Group name."`
	To   string `required:"" help:"New position of every partition: earliest, latest, an offset, or an RFC 3339 time."`
}

func (c *groupResetCmd) Run(ctx context.Context) error {
	to, err := parsePosition("--to", c.To)
	if err != nil {
		return err
	}
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		err := cl.ResetGroup(ctx, c.Name, to)
		if errors.Is(err, client.ErrGroupActive) {
			return fmt.Errorf("group %s has members; stop them first", c.Name)
		}
		if err != nil {
			return err
		}
		fmt.Printf("reset group %s to %s\n", c.Name, c.To)
		return nil
	})
}
