package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

type topicCmd struct {
	Create   topicCreateCmd   `cmd:"" help:"Create a topic."`
	List     topicListCmd     `cmd:"" help:"List topics."`
	Describe topicDescribeCmd `cmd:"" help:"Show a topic's configuration and partitions."`
	Delete   topicDeleteCmd   `cmd:"" help:"Delete a topic."`
}

type topicCreateCmd struct {
	serverFlag
	Name           string `arg:"" help:"Topic name."`
	Partitions     int    `default:"0" help:"Partition count; 0 takes the broker's default."`
	MaxSubscribers int    `default:"0" help:"Maximum subscriptions; 0 takes the broker's limit."`
}

func (c *topicCreateCmd) Run(ctx context.Context) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if err := cl.CreateTopic(rctx, c.Name, client.TopicConfig{Partitions: c.Partitions, MaxSubscribers: c.MaxSubscribers}); err != nil {
		return err
	}
	fmt.Printf("created topic %s\n", c.Name)
	return nil
}

type topicListCmd struct {
	serverFlag
}

func (c *topicListCmd) Run(ctx context.Context) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	topics, err := cl.ListTopics(rctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "TOPIC\tPARTITIONS")
	for _, t := range topics {
		_, _ = fmt.Fprintf(w, "%s\t%d\n", t.Name, t.Partitions)
	}
	return w.Flush()
}

type topicDescribeCmd struct {
	serverFlag
	Name string `arg:"" help:"Topic name."`
}

func (c *topicDescribeCmd) Run(ctx context.Context) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	info, err := cl.DescribeTopic(rctx, c.Name)
	if err != nil {
		return err
	}
	fmt.Printf("topic %s\n", info.Name)
	keys := make([]string, 0, len(info.Config))
	for k := range info.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("  %s = %s\n", k, info.Config[k])
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "PARTITION\tSTART\tEND\tSUBSCRIBERS")
	for _, p := range info.Partitions {
		_, _ = fmt.Fprintf(w, "%d\t%d\t%d\t%d\n", p.ID, p.StartOffset, p.EndOffset, p.Subscribers)
	}
	return w.Flush()
}

type topicDeleteCmd struct {
	serverFlag
	Name string `arg:"" help:"Topic name."`
}

func (c *topicDeleteCmd) Run(ctx context.Context) error {
	cl, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = cl.Close() }()
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if err := cl.DeleteTopic(rctx, c.Name); err != nil {
		return err
	}
	fmt.Printf("deleted topic %s\n", c.Name)
	return nil
}
