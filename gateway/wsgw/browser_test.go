package wsgw_test

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/browsertest"
)

// browserPage is the test's page: it opens the WebSocket, authenticates
// with the token in its fragment (a browser cannot set headers on a
// WebSocket) with the user and password in its fragment, subscribes, publishes n messages in four publishes, and
// checks its acks and deliveries: every offset in order, with key, value
// and header intact. Its title tells the result.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>running</title>
<script>
const N = 200;
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws", ["ratatoskr.v1"]);
let next = 0, acked = 0, over = false;
function end(title) { if (!over) { over = true; document.title = title; ws.close(1000, "bye"); } }
ws.onopen = () => {
  const [user, password] = decodeURIComponent(location.hash.slice(1)).split(":");
  ws.send(JSON.stringify({op: "auth", id: "a", user, password}));
  ws.send(JSON.stringify({op: "subscribe", id: "s", topic: "browser", partition: 0, from: "earliest"}));
};
ws.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  if (m.type === "error") return end("fail: " + ev.data);
  if (m.type === "ok" && m.id === "s") {
    const records = [];
    for (let i = 0; i < N; i++) records.push({key: "k" + i, value: "msg " + i + " ü", headers: [{key: "n", value: String(i)}]});
    for (let i = 0; i < N; i += N / 4) {
      ws.send(JSON.stringify({op: "publish", id: "p" + i, topic: "browser", partition: 0, records: records.slice(i, i + N / 4)}));
    }
  }
  if (m.type === "ack") {
    for (const a of m.acks) {
      if (a.partition !== 0 || a.offset !== acked) return end("fail: ack " + JSON.stringify(a) + ", want offset " + acked);
      acked++;
    }
  }
  if (m.type === "messages") {
    for (const r of m.records) {
      if (r.offset !== next || r.key !== "k" + next || r.value !== "msg " + next + " ü" || r.headers[0].value !== String(next)) {
        return end("fail: record " + JSON.stringify(r) + ", want offset " + next);
      }
      next++;
    }
  }
  if (next === N && acked === N) end("done " + next);
};
ws.onclose = (ev) => { if (!over) { over = true; document.title = "closed " + ev.code + " " + ev.reason; } };
</script>`

// TestBrowser runs the page in headless Chromium against a broker with
// authentication on: the page authenticates with its first message,
// publishes, and sees its own messages come back in order.
func TestBrowser(t *testing.T) {
	e := startSecure(t)
	ctx := testCtx(t)
	admin, err := e.Gateway().Dedicated(ctx, "test", adminCred)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	require.NoError(t, admin.CreateTopic(ctx, "browser", client.TopicConfig{Partitions: 1}))
	s := serve(t, e, nil, browserPage)

	bctx := browsertest.Start(t)
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(s.URL+"/#"+adminCred.User+":"+adminCred.Password),
		chromedp.Poll[chromedp.Void](`!document.title.startsWith("running")`, chromedp.WithPollingTimeout(60*time.Second))))
	title, err := chromedp.Run(bctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "done 200", title)
}
