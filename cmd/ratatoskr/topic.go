package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

type topicCmd struct {
	Create    topicCreateCmd    `cmd:"" help:"Create a topic."`
	List      topicListCmd      `cmd:"" help:"List topics."`
	Describe  topicDescribeCmd  `cmd:"" help:"Show a topic's configuration and partitions."`
	Update    topicUpdateCmd    `cmd:"" help:"Change a topic's configuration at run time."`
	Delete    topicDeleteCmd    `cmd:"" help:"Delete a topic."`
	RotateKey topicRotateKeyCmd `cmd:"" name:"rotate-key" help:"Give an encrypted topic a new data key: batches written from now on use it; older ones keep theirs and stay readable."`
}

// request connects, runs one request under the --timeout, and closes.
func (s serverFlag) request(ctx context.Context, fn func(context.Context, *client.Client) error) error {
	cl, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	rctx, cancel := context.WithTimeout(ctx, s.Timeout.D())
	defer cancel()
	return fn(rctx, cl)
}

// A setting's 0 (or empty) means the same in create and update: the
// broker's limit for --max-subscribers, forever for --retention, no bound
// for --retention-bytes, the default for --max-deliveries (5) and
// --dead-letter-topic (<topic>.dlq). A flag not given at create takes the
// broker's default (serve --retention, --retention-bytes, ...); at update
// it leaves the setting as it is.
type topicCreateCmd struct {
	serverFlag
	Name            string    `arg:"" help:"Topic name."`
	Partitions      int       `default:"0" help:"Partition count; 0 takes the broker's default (serve --default-partitions)."`
	MaxSubscribers  int       `default:"0" help:"Maximum subscriptions, up to the broker's --max-subscribers; 0: the broker's limit."`
	Storage         string    `enum:",disk,memory,redis" default:"" help:"disk (a durable log), memory, or redis (kept in the broker's --redis-url server); default: the broker's."`
	Fsync           string    `help:"always (ack after fsync), interval=DURATION or never; default: the broker's."`
	Retention       *duration `placeholder:"DURATION" help:"Keep messages this long (90m, 7d); 0 keeps them forever; default: the broker's (serve --retention)."`
	KeepForever     bool      `help:"The same as --retention 0."`
	RetentionBytes  *byteSize `placeholder:"SIZE" help:"Keep at most this much per partition (512MiB, 10GiB); 0: no bound; default: the broker's (serve --retention-bytes)."`
	DeadLetterTopic string    `placeholder:"TOPIC" help:"Where message-mode groups send a message after --max-deliveries; empty: <topic>.dlq."`
	MaxDeliveries   int       `help:"Deliveries of a message to a message-mode group before the dead-letter topic; 0: the default (5)."`
	Encryption      string    `enum:",on,off" default:"" help:"on: encrypt the topic at rest under the broker's master key (disk topics; fixed at creation); default: the broker's (serve --encrypt-at-rest)."`
	Replicas        int       `help:"Copies of each partition on as many nodes of a cluster: 1, 3 or 5 (fixed at creation); 0: the cluster's default (3 with three nodes or more)."`
}

// config is the create request. The client leaves zeros to the broker,
// so an explicit 0 retention goes as KeepForever and an explicit 0 size
// bound as UnboundedBytes: 0 then means what it means in an update.
func (c *topicCreateCmd) config() (client.TopicConfig, error) {
	if c.Partitions < 0 || c.MaxSubscribers < 0 || c.MaxDeliveries < 0 || c.Replicas < 0 {
		return client.TopicConfig{}, errors.New("--partitions, --max-subscribers, --max-deliveries and --replicas must not be negative")
	}
	cfg := client.TopicConfig{Partitions: c.Partitions, MaxSubscribers: c.MaxSubscribers, Storage: c.Storage,
		Fsync: c.Fsync, DeadLetterTopic: c.DeadLetterTopic, MaxDeliveries: c.MaxDeliveries, Encryption: c.Encryption,
		Replicas: c.Replicas}
	switch {
	case c.KeepForever && c.Retention != nil && *c.Retention != 0:
		return cfg, errors.New("--keep-forever and --retention " + c.Retention.String() + " contradict each other")
	case c.KeepForever || c.Retention != nil && *c.Retention == 0:
		cfg.Retention = client.KeepForever
	case c.Retention != nil && *c.Retention < 0:
		return cfg, errors.New("--retention must not be negative; 0 keeps messages forever")
	case c.Retention != nil:
		cfg.Retention = c.Retention.D()
	}
	if c.RetentionBytes != nil {
		switch n := int64(*c.RetentionBytes); {
		case n < 0:
			return cfg, errors.New("--retention-bytes must not be negative; 0 means no bound")
		case n == 0:
			cfg.RetentionBytes = client.UnboundedBytes
		default:
			cfg.RetentionBytes = n
		}
	}
	return cfg, nil
}

func (c *topicCreateCmd) Run(ctx context.Context) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		if err := cl.CreateTopic(ctx, c.Name, cfg); err != nil {
			return err
		}
		fmt.Printf("created topic %s\n", c.Name)
		return nil
	})
}

// outputFlag is --output of the commands that can print JSON.
type outputFlag struct {
	Output string `short:"o" enum:"text,json" default:"text" help:"text, or json: one JSON document, keys in snake_case."`
}

func (o outputFlag) json() bool { return o.Output == "json" }

type topicListCmd struct {
	serverFlag
	outputFlag
}

func (c *topicListCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		topics, err := cl.ListTopics(ctx)
		if err != nil {
			return err
		}
		if c.json() {
			out := make([]jsonTopicSummary, len(topics))
			for i, t := range topics {
				out[i] = jsonTopicSummary{Name: t.Name, Partitions: t.Partitions}
			}
			return printJSON(out)
		}
		rows := [][]any{{"TOPIC", "PARTITIONS"}}
		for _, t := range topics {
			rows = append(rows, []any{t.Name, t.Partitions})
		}
		return printTable(rows)
	})
}

type topicDescribeCmd struct {
	serverFlag
	outputFlag
	Name string `arg:"" help:"Topic name."`
}

func (c *topicDescribeCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		info, err := cl.DescribeTopic(ctx, c.Name)
		if err != nil {
			return err
		}
		if c.json() {
			return printJSON(topicJSON(info))
		}
		fmt.Printf("topic %s\n", info.Name)
		printTopicConfig(info)
		rows := [][]any{{"PARTITION", "START", "END", "BYTES", "SEGMENTS", "SUBSCRIBERS", "CORRUPT", "STATE"}}
		var why []string
		for _, p := range info.Partitions {
			rows = append(rows, []any{p.ID, p.StartOffset, p.EndOffset, p.Bytes, p.Segments, p.Subscribers, p.Corrupt, p.State})
			if p.Reason != "" {
				why = append(why, fmt.Sprintf("partition %d is %s: %s", p.ID, p.State, p.Reason))
			}
		}
		if err := printTable(rows); err != nil {
			return err
		}
		for _, w := range why {
			fmt.Println(w)
		}
		return nil
	})
}

// printTopicConfig writes a topic's settings, one per line, with the
// values they take: a default is marked, and 0s and 0 say what they mean.
func printTopicConfig(info client.TopicInfo) {
	for _, k := range slices.Sorted(maps.Keys(info.Config)) {
		fmt.Printf("  %s = %s\n", k, settingText(info, k))
	}
}

// settingText is one setting's effective value as a person reads it.
func settingText(info client.TopicInfo, key string) string {
	v := info.Effective(key)
	switch key {
	case "retention":
		if d, err := time.ParseDuration(v); err == nil {
			if v = duration(d).String(); d == 0 {
				v = "0 (forever)"
			}
		}
	case "retention-bytes":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if v = byteSize(n).String(); n == 0 {
				v = "0 (no bound)"
			}
		}
	}
	if _, ok := info.Defaults[key]; ok {
		v += " (default)"
	}
	return v
}

// topicUpdateCmd changes only the settings given; storage and the
// partition count are fixed at creation.
type topicUpdateCmd struct {
	serverFlag
	outputFlag
	Name            string    `arg:"" help:"Topic name."`
	MaxSubscribers  *int      `help:"Maximum subscriptions, up to the broker's --max-subscribers; 0: the broker's limit."`
	Fsync           *string   `help:"always, interval=DURATION or never (disk topics)."`
	Retention       *duration `placeholder:"DURATION" help:"Keep messages this long (90m, 7d); 0 keeps them forever."`
	RetentionBytes  *byteSize `placeholder:"SIZE" help:"Keep at most this much per partition (512MiB, 10GiB); 0: no bound."`
	DeadLetterTopic *string   `placeholder:"TOPIC" help:"Dead-letter topic of message-mode groups; empty (\"\"): <topic>.dlq."`
	MaxDeliveries   *int      `help:"Deliveries before the dead-letter topic; 0: the default (5)."`
}

func (c *topicUpdateCmd) changes() map[string]string {
	ch := map[string]string{}
	if c.MaxSubscribers != nil {
		ch["max-subscribers"] = strconv.Itoa(*c.MaxSubscribers)
	}
	if c.Fsync != nil {
		ch["fsync"] = *c.Fsync
	}
	if c.Retention != nil {
		ch["retention"] = c.Retention.D().String()
	}
	if c.RetentionBytes != nil {
		ch["retention-bytes"] = strconv.FormatInt(int64(*c.RetentionBytes), 10)
	}
	if c.DeadLetterTopic != nil {
		ch["dead-letter-topic"] = *c.DeadLetterTopic
	}
	if c.MaxDeliveries != nil {
		ch["max-deliveries"] = strconv.Itoa(*c.MaxDeliveries)
	}
	return ch
}

func (c *topicUpdateCmd) Run(ctx context.Context) error {
	ch := c.changes()
	if len(ch) == 0 {
		return errors.New("nothing to change: give at least one of --max-subscribers, --fsync, --retention, " +
			"--retention-bytes, --dead-letter-topic, --max-deliveries")
	}
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		info, err := cl.UpdateTopic(ctx, c.Name, ch)
		if err != nil {
			return err
		}
		if c.json() {
			return printJSON(topicJSON(info))
		}
		fmt.Printf("updated topic %s\n", info.Name)
		printTopicConfig(info)
		return nil
	})
}

type topicDeleteCmd struct {
	serverFlag
	Name string `arg:"" help:"Topic name."`
}

func (c *topicDeleteCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		if err := cl.DeleteTopic(ctx, c.Name); err != nil {
			return err
		}
		fmt.Printf("deleted topic %s\n", c.Name)
		return nil
	})
}

type topicRotateKeyCmd struct {
	serverFlag
	Name string `arg:"" help:"Topic name."`
}

func (c *topicRotateKeyCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		if _, err := cl.UpdateTopic(ctx, c.Name, map[string]string{"rotate-key": "true"}); err != nil {
			return err
		}
		fmt.Printf("rotated the data key of topic %s\n", c.Name)
		return nil
	})
}

// printTable writes rows as aligned columns to standard output.
func printTable(rows [][]any) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, row := range rows {
		for i, cell := range row {
			sep := "\t"
			if i == len(row)-1 {
				sep = "\n"
			}
			if _, err := fmt.Fprint(w, cell, sep); err != nil {
				return err
			}
		}
	}
	return w.Flush()
}
