package engine_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// topicWatcher is a plugin that reports topic changes on a channel.
type topicWatcher struct{ changes chan engine.Event }

func (w topicWatcher) Name() string { return "topic-watcher" }

// Accepts keeps batch events (and everything else) out of its queue.
func (w topicWatcher) Accepts(k engine.EventKind) bool {
	return k == engine.EventTopicCreated || k == engine.EventTopicDeleted
}

func (w topicWatcher) Handle(ev engine.Event) error {
	w.changes <- ev
	return nil
}

// An embedder runs the broker as a library and watches its topics with a
// plugin.
func ExampleWithPlugin() {
	dir, _ := os.MkdirTemp("", "ratatoskr-example")
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", dir
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))

	w := topicWatcher{changes: make(chan engine.Event, 16)}
	e, err := engine.New(cfg, engine.WithPlugin(w))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = e.Shutdown(ctx) }()

	c, err := client.Dial(ctx, e.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = c.Close() }()
	_ = c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 3})
	_ = c.DeleteTopic(ctx, "orders")
	for range 2 {
		ev := <-w.changes
		fmt.Println(ev.Kind, ev.Target, ev.Actor, ev.Outcome())
	}
	// Output:
	// topic.created topic/orders client ok
	// topic.deleted topic/orders client ok
}
