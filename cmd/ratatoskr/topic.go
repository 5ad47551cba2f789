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
	Create   topicCreateCmd   `cmd:"" help:"Create a topic."`
	List     topicListCmd     `cmd:"" help:"List topics."`
	Describe topicDescribeCmd `cmd:"" help:"Show a topic's configuration and partitions."`
	Update   topicUpdateCmd   `cmd:"" help:"Change a topic's configuration at run time."`
	Delete   topicDeleteCmd   `cmd:"" help:"Delete a topic."`
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

type topicCreateCmd struct {
	serverFlag
	Name            string        `arg:"" help:"Topic name."`
	Partitions      int           `default:"0" help:"Partition count; 0 takes the broker's default."`
	MaxSubscribers  int           `default:"0" help:"Maximum subscriptions; 0 takes the broker's limit."`
	Storage         string        `enum:",disk,memory" default:"" help:"disk (a durable log) or memory; default: the broker's."`
	Fsync           string        `help:"always (ack after fsync), interval=DURATION or never; default: the broker's."`
	Retention       time.Duration `help:"Keep messages this long; default: the broker's. See --keep-forever."`
	KeepForever     bool          `help:"No retention by age."`
	RetentionBytes  int64         `help:"Keep at most this many bytes per partition; 0: no bound."`
	DeadLetterTopic string        `help:"Where message-mode groups send a message after --max-deliveries; default: <topic>.dlq."`
	MaxDeliveries   int           `help:"Deliveries of a message to a message-mode group before the dead-letter topic; 0: the default (5)."`
}

func (c *topicCreateCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		cfg := client.TopicConfig{Partitions: c.Partitions, MaxSubscribers: c.MaxSubscribers, Storage: c.Storage,
			Fsync: c.Fsync, Retention: c.Retention, RetentionBytes: c.RetentionBytes,
			DeadLetterTopic: c.DeadLetterTopic, MaxDeliveries: c.MaxDeliveries}
		if c.KeepForever {
			cfg.Retention = client.KeepForever
		}
		if err := cl.CreateTopic(ctx, c.Name, cfg); err != nil {
			return err
		}
		fmt.Printf("created topic %s\n", c.Name)
		return nil
	})
}

type topicListCmd struct {
	serverFlag
}

func (c *topicListCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		topics, err := cl.ListTopics(ctx)
		if err != nil {
			return err
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
	Name string `arg:"" help:"Topic name."`
}

func (c *topicDescribeCmd) Run(ctx context.Context) error {
	return c.request(ctx, func(ctx context.Context, cl *client.Client) error {
		info, err := cl.DescribeTopic(ctx, c.Name)
		if err != nil {
			return err
		}
		fmt.Printf("topic %s\n", info.Name)
		for _, k := range slices.Sorted(maps.Keys(info.Config)) {
			fmt.Printf("  %s = %s\n", k, info.Config[k])
		}
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

// topicUpdateCmd changes only the settings given; storage and the
// partition count are fixed at creation.
type topicUpdateCmd struct {
	serverFlag
	Name            string         `arg:"" help:"Topic name."`
	MaxSubscribers  *int           `help:"Maximum subscriptions, 1 up to the broker's --max-subscribers."`
	Fsync           *string        `help:"always, interval=DURATION or never (disk topics)."`
	Retention       *time.Duration `help:"Keep messages this long; 0 keeps them forever."`
	RetentionBytes  *int64         `help:"Keep at most this many bytes per partition; 0: no bound."`
	DeadLetterTopic *string        `help:"Dead-letter topic of message-mode groups; \"\" restores <topic>.dlq."`
	MaxDeliveries   *int           `help:"Deliveries before the dead-letter topic; 0: the default (5)."`
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
		ch["retention"] = c.Retention.String()
	}
	if c.RetentionBytes != nil {
		ch["retention-bytes"] = strconv.FormatInt(*c.RetentionBytes, 10)
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
		fmt.Printf("updated topic %s\n", info.Name)
		for _, k := range slices.Sorted(maps.Keys(info.Config)) {
			fmt.Printf("  %s = %s\n", k, info.Config[k])
		}
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
