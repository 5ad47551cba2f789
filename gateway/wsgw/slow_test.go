package wsgw_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestSlowConsumer: a client that stops reading while much is published
// blocks its own session only; once a write to it stays blocked for
// WriteTimeout it is cut, and when it reads again it finds the close
// code after what was written. The broker goes on serving another
// client, and nothing the socket started is left running.
func TestSlowConsumer(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	g := e.Gateway()
	pub, err := g.Dedicated(ctx, "test", gateway.Credentials{Remote: "127.0.0.1:1"})
	require.NoError(t, err)
	defer func() { _ = pub.Close() }()
	require.NoError(t, pub.CreateTopic(ctx, "slow", client.TopicConfig{Partitions: 1}))
	s, h := serveHandler(t, e, func(c *wsgw.Config) { c.WriteTimeout = 300 * time.Millisecond }, "")
	// The baseline: the broker, the test server and the producer's
	// session run; no socket yet.
	s.Client().CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	const slow = "ratatoskr_gateway_ws_slow_consumers_total"
	require.Zero(t, metric(h, slow))

	ws := dial(t, s, nil)
	sendBin(t, ws, wsproto.AppendSubscribe(nil, 1, "slow", -1, wire.Start{Kind: wire.StartLatest}))
	r := readBin(t, ws)
	require.Equal(t, wsproto.OpOK, r.Op, "%v", r.Err())
	// ws now reads nothing while the producer publishes until it is cut.

	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		msgs := make([]client.Message, 64)
		for i := range msgs {
			msgs[i].Value = make([]byte, 1024)
		}
		for pctx.Err() == nil {
			if err := pub.PublishBatchAsync(pctx, "slow", msgs); err != nil {
				return
			}
		}
	})
	require.Eventually(t, func() bool { return metric(h, slow) == 1 }, 20*time.Second, 5*time.Millisecond,
		"the client that stopped reading is cut")
	stop()
	wg.Wait()
	// Reading again, the client takes what was written, then the close.
	code, reason := closeStatus(t, ws)
	require.Equal(t, wsgw.CloseSlowConsumer, code, reason)
	require.Equal(t, "slow consumer", reason)
	require.Equal(t, 1.0, metric(h, `ratatoskr_gateway_ws_closed_total{code="1008"}`))

	// The broker and the gateway serve another client as before.
	other := dial(t, s, nil)
	r2 := callJSON(t, other, obj{"op": "subscribe", "id": 1, "topic": "slow", "partition": 0})
	require.Equal(t, "ok", r2["type"], "%v", r2)
	sendJSON(t, other, obj{"op": "publish", "id": 2, "topic": "slow", "records": []obj{{"value": "after"}}})
	for acked, got := false, false; !acked || !got; {
		m := readJSON(t, other)
		switch m["type"] {
		case "ack":
			acked = true
		case "messages":
			recs := m["records"].([]any)
			got = recs[len(recs)-1].(obj)["value"] == "after"
		default:
			t.Fatalf("%v", m)
		}
	}
	require.NoError(t, other.Close(websocket.StatusNormalClosure, ""))

	// Every goroutine of the two sockets ends. (The condition runs on a
	// goroutine of Eventually's own: one more than the baseline.)
	if !assert.Eventually(t, func() bool {
		s.Client().CloseIdleConnections()
		return runtime.NumGoroutine() <= baseline+1
	}, 10*time.Second, 10*time.Millisecond) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d, before the sockets %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
	}
}

// TestShutdownClosesSockets: when the broker shuts down, its sockets are
// closed with 1001 (going away).
func TestShutdownClosesSockets(t *testing.T) {
	e := startBroker(t, nil)
	s := serve(t, e, nil, "")
	ws := dial(t, s, nil)
	r := callJSON(t, ws, obj{"op": "create_topic", "id": 1, "topic": "t"})
	require.Equal(t, "ok", r["type"], "%v", r)
	r = callJSON(t, ws, obj{"op": "subscribe", "id": 2, "topic": "t"})
	require.Equal(t, "ok", r["type"], "%v", r)
	require.NoError(t, e.Shutdown(testCtx(t)))
	code, reason := closeStatus(t, ws)
	require.Equal(t, wsgw.CloseGoingAway, code, reason)
}
