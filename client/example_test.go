package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

func ExampleDial() {
	ctx := context.Background()
	c, err := client.Dial(ctx, brokerAddr, client.WithName("example"))
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer func() { _ = c.Close() }()
	fmt.Println("connected; messages up to", c.MaxMessageBytes(), "bytes")
	// Output: connected; messages up to 1048576 bytes
}

func ExampleClient_Publish() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	_ = c.CreateTopic(ctx, "example-publish", client.TopicConfig{Partitions: 1})
	for _, v := range []string{"first", "second"} {
		ack, err := c.Publish(ctx, "example-publish", client.Message{Value: []byte(v)})
		if err != nil {
			fmt.Println("publish:", err)
			return
		}
		fmt.Printf("%s stored at partition %d offset %d\n", v, ack.Partition, ack.Offset)
	}
	// Output:
	// first stored at partition 0 offset 0
	// second stored at partition 0 offset 1
}

func ExampleClient_PublishAsync() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	for i := range 1000 {
		// PublishAsync copies the message into a batch and returns; the
		// client sends batches whenever the connection is idle.
		if err := c.PublishAsync(ctx, "example-async", client.Message{Value: fmt.Appendf(nil, "event %d", i)}); err != nil {
			fmt.Println("publish:", err)
			return
		}
	}
	// Flush waits until the broker has acknowledged all of them.
	if err := c.Flush(ctx); err != nil {
		fmt.Println("flush:", err)
		return
	}
	info, _ := c.DescribeTopic(ctx, "example-async")
	fmt.Println("stored:", info.Partitions[0].EndOffset)
	// Output: stored: 1000
}

func ExampleClient_Subscribe() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	got := make(chan string, 3)
	sub, err := c.Subscribe(ctx, "example-sub", func(d *client.Delivery) {
		// d and its slices are valid only during the call: copy to keep.
		got <- fmt.Sprintf("offset %d: %s", d.Offset, d.Value)
	})
	if err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	defer func() { _ = sub.Unsubscribe(ctx) }()
	for _, v := range []string{"a", "b", "c"} {
		_, _ = c.Publish(ctx, "example-sub", client.Message{Value: []byte(v)})
	}
	for range 3 {
		fmt.Println(<-got)
	}
	// Output:
	// offset 0: a
	// offset 1: b
	// offset 2: c
}

func ExampleClient_SubscribeChan() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	sub, ch, err := c.SubscribeChan(ctx, "example-chan", 16)
	if err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	_, _ = c.Publish(ctx, "example-chan", client.Message{Key: []byte("user-7"), Value: []byte("signed up")})
	select {
	case d := <-ch:
		fmt.Printf("%s %s\n", d.Key, d.Value)
	case <-time.After(5 * time.Second):
		fmt.Println("timeout")
	}
	_ = sub.Unsubscribe(ctx)
	// Output: user-7 signed up
}

func ExampleClient_CreateTopic() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	err := c.CreateTopic(ctx, "example-orders", client.TopicConfig{Partitions: 4})
	fmt.Println(err)
	err = c.CreateTopic(ctx, "example-orders", client.TopicConfig{Partitions: 4})
	fmt.Println(errors.Is(err, client.ErrTopicExists))
	// Output:
	// <nil>
	// true
}

func ExampleJoinGroup() {
	ctx := context.Background()
	c, _ := client.Dial(ctx, brokerAddr)
	defer func() { _ = c.Close() }()
	_ = c.CreateTopic(ctx, "example-jobs", client.TopicConfig{Partitions: 2})
	for _, v := range []string{"a", "b", "poison"} {
		_, _ = c.Publish(ctx, "example-jobs", client.Message{Key: []byte(v), Value: []byte(v)})
	}

	// Message mode: returning nil acks, an error nacks; after MaxDeliveries
	// the message goes to "example-jobs.dlq".
	done := make(chan struct{}, 3)
	g, err := client.JoinGroup(ctx, brokerAddr, client.GroupConfig{
		Group: "workers", Topic: "example-jobs", Mode: client.AckMessage, Start: client.Earliest,
		MaxDeliveries: 2, Backoff: []time.Duration{10 * time.Millisecond},
		Handler: func(m *client.GroupMessage) error {
			if string(m.Value) == "poison" {
				if m.Attempt == 2 {
					done <- struct{}{}
				}
				return errors.New("cannot handle " + string(m.Value))
			}
			done <- struct{}{}
			return nil
		},
	})
	if err != nil {
		fmt.Println("join:", err)
		return
	}
	defer func() { _ = g.Close() }()
	for range 3 {
		<-done
	}
	fetched := func() int {
		f, err := c.Fetch(ctx, "example-jobs.dlq", 0, client.Earliest, client.MaxWait(time.Second))
		if err != nil {
			return 0
		}
		return len(f.Messages)
	}
	for fetched() == 0 {
		time.Sleep(10 * time.Millisecond) // poll interval: the dead-letter topic is created on first use
	}
	f, _ := c.Fetch(ctx, "example-jobs.dlq", 0, client.Earliest)
	for _, h := range f.Messages[0].Headers {
		if h.Key == "x-delivery-count" || h.Key == "x-last-nack-reason" {
			fmt.Printf("%s: %s\n", h.Key, h.Value)
		}
	}
	// Output:
	// x-delivery-count: 2
	// x-last-nack-reason: cannot handle poison
}

func ExampleDialCluster() {
	ctx := context.Background()
	// The nodes' addresses, comma-separated: one that answers is enough,
	// the others are learned from the answers (here, a single broker).
	cl, err := client.DialCluster(ctx, brokerAddr, client.WithIdempotence())
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer func() { _ = cl.Close() }()
	_ = cl.CreateTopic(ctx, "example-cluster", client.TopicConfig{Partitions: 2})
	ack, err := cl.Publish(ctx, "example-cluster", client.Message{Value: []byte("hello")}, client.ToPartition(1))
	if err != nil {
		fmt.Println("publish:", err)
		return
	}
	fmt.Printf("stored at partition %d offset %d\n", ack.Partition, ack.Offset)
	leader, err := cl.Leader(ctx, "example-cluster", 1)
	fmt.Println("led by the node dialled:", err == nil && leader == brokerAddr)
	// Output:
	// stored at partition 1 offset 0
	// led by the node dialled: true
}
