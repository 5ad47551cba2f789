package httpapi

import (
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ratatoskr-mq/ratatoskr/internal/browsertest"
	"github.com/stretchr/testify/require"
)

// TestDashboard drives the dashboard in headless Chromium: a topic appears,
// with a message rate that is not zero and moves while its end offsets
// grow (the fake broker's grow at every look, as under a producer), and
// a refused token brings the login form back.
func TestDashboard(t *testing.T) {
	b := newFake()
	b.addTopic(fakeTopic("clicks", 2))
	b.addTopic(fakeTopic("acme~orders", 2))
	b.shards = []Shard{{ID: 0, InboxCap: 8, Partitions: 2}, {ID: 1, InboxCap: 8}}
	b.onTopics = func(b *fakeBroker) {
		t := b.topics["clicks"]
		for i := range t.Parts {
			t.Parts[i].Log.End += int64(5 + i)
		}
	}
	s := serve(t, b, nil)

	ctx := browsertest.Start(t)
	base := "http://" + s.Addr() + "/"
	row := `tr[data-topic="clicks"]`
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"#token="+testToken),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.WaitVisible(chromedp.CSS(`#partitions tr[data-partition="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#shards tbody tr[data-shard]`)),
	))
	hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#nodes-section').hidden`))
	require.NoError(t, err)
	require.True(t, hidden, "a single node shows no nodes panel")
	b.locked(func() {
		b.cluster = &Cluster{NodeID: 2, Controller: RaftGroup{Leader: 1, Term: 3},
			Nodes: []ClusterNode{{ID: 1, Status: "active", Reachable: true, ClientAddr: "10.0.0.1:7070"},
				{ID: 2, Status: "active", Reachable: true, ClientAddr: "10.0.0.2:7070"},
				{ID: 3, Status: "active", Reachable: false, ClientAddr: "10.0.0.3:7070"}},
			Partitions: []ClusterPart{{Topic: "clicks", Partition: 0, Replicas: []uint64{1, 2, 3}, Leader: 1},
				{Topic: "clicks", Partition: 1, Replicas: []uint64{2, 3, 1}, Leader: 2}}}
	})
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#nodes tbody tr[data-node="3"]`))))
	reach, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#nodes tr[data-node="3"] td:nth-child(3)`)))
	require.NoError(t, err)
	require.Equal(t, "no", reach, "an unreachable node shows as such")
	leads, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#nodes tr[data-node="1"] td:nth-child(6)`)))
	require.NoError(t, err)
	require.Equal(t, "1", leads)

	tenant, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-topic="acme~orders"] .tenant`)))
	require.NoError(t, err)
	require.Equal(t, "acme", tenant, "a tenant's topic shows its tenant")
	name, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-topic="acme~orders"] .name`)))
	require.NoError(t, err)
	require.Equal(t, "orders", name)
	url, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	require.NotContains(t, url, testToken, "the token is taken out of the address bar")

	// The page replaces its rows on every poll; read the current one.
	readRate := chromedp.Evaluate[string](`(document.querySelector('` + row + ` .rate') || {dataset: {}}).dataset.rate || ""`)
	var rates []float64
	for len(rates) < 2 {
		require.NoError(t, ctx.Err(), "no moving rate shown; rates read: %v", rates)
		v, err := chromedp.Run(ctx, readRate)
		require.NoError(t, err)
		if r, err := strconv.ParseFloat(v, 64); err == nil && r > 0 && (len(rates) == 0 || r != rates[len(rates)-1]) {
			rates = append(rates, r)
		}
		time.Sleep(300 * time.Millisecond) // between reads of the page, which refreshes every 1.5s
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(row+" .rate")))
	require.NoError(t, err)
	require.NotEqual(t, "0.0", text)
	require.NotEqual(t, "…", text)

	// A refused token brings the login form back.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate("about:blank"),
		chromedp.Navigate(base+"#token=wrong"),
		chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.WaitNotVisible(chromedp.ID("main")),
	))
}
