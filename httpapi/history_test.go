package httpapi

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistoryRingKeepsRetention(t *testing.T) {
	h := NewHistory(10*time.Millisecond, 30*time.Millisecond, nil)
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		h.add(HistorySample{Time: t0.Add(time.Duration(i) * time.Second), PublishedMessages: uint64(10 * i)})
	}
	got := h.samples()
	require.Len(t, got, 3)
	for i, s := range got {
		require.EqualValues(t, 10*(i+2), s.PublishedMessages, "oldest first, the oldest dropped")
		require.InDelta(t, 10, s.MessageRate, 0)
	}
	last, ok := h.latest()
	require.True(t, ok)
	require.EqualValues(t, 40, last.PublishedMessages)
}

func TestHistoryRates(t *testing.T) {
	h := NewHistory(time.Second, time.Hour, nil)
	t0 := time.Unix(1000, 0)
	h.add(HistorySample{Time: t0, PublishedMessages: 100, Errors: 5, Topics: map[string]TopicSample{"a": {PublishedMessages: 100}}})
	h.add(HistorySample{Time: t0.Add(2 * time.Second), PublishedMessages: 50, Errors: 9,
		Topics: map[string]TopicSample{"a": {PublishedMessages: 50}, "b": {PublishedMessages: 50}}})
	cur, _ := h.latest()
	require.InDelta(t, 0, cur.MessageRate, 0, "a deleted topic's counts do not make a negative rate")
	require.InDelta(t, 2, cur.ErrorRate, 0)
	require.InDelta(t, 0, cur.Topics["a"].MessageRate, 0)
	require.InDelta(t, 25, cur.Topics["b"].MessageRate, 0, "a new topic's counts start from 0")
	require.InDelta(t, 25, h.topicRate("b"), 0)
}

// TestHistoryKeepsBusiestTopics: a sample keeps the historyTopics busiest
// topics; rates of the others are still known for the health report, and
// a topic that comes back into the top gets a true rate.
func TestHistoryKeepsBusiestTopics(t *testing.T) {
	h := NewHistory(time.Second, time.Hour, nil)
	t0 := time.Unix(1000, 0)
	counts := func(step uint64, quiet string) map[string]TopicSample {
		ts := map[string]TopicSample{}
		for i := range historyTopics + 5 {
			name := "t" + strconv.Itoa(i)
			n := step * uint64(i+1)
			if name == quiet {
				n = 7
			}
			ts[name] = TopicSample{PublishedMessages: n}
		}
		return ts
	}
	h.add(HistorySample{Time: t0, Topics: counts(0, "")})
	h.add(HistorySample{Time: t0.Add(time.Second), Topics: counts(10, "t24")})
	cur, _ := h.latest()
	require.Len(t, cur.Topics, historyTopics)
	require.NotContains(t, cur.Topics, "t0", "the quietest go")
	require.NotContains(t, cur.Topics, "t24", "t24 published 7")
	require.InDelta(t, 240, cur.Topics["t23"].MessageRate, 0)
	require.InDelta(t, 10, h.topicRate("t0"), 0, "a topic left out of the sample still has its rate")
	h.add(HistorySample{Time: t0.Add(2 * time.Second), Topics: counts(20, "")})
	cur, _ = h.latest()
	require.InDelta(t, 500-7, cur.Topics["t24"].MessageRate, 0, "measured from its count at the last sample")
}

// TestAuthEventsAreBounded: refused token checks emit at most authLimit
// events a second, each with a clipped request line; the ones over the
// limit are counted into the next event.

// TestHistoryCollector: Start takes a first sample at once and then one
// per interval; Close stops the collector and waits for it.
func TestHistoryCollector(t *testing.T) {
	taken := make(chan struct{}, 100)
	var n uint64
	h := NewHistory(time.Millisecond, time.Hour, func() HistorySample {
		n++ // the collector's goroutine alone calls it after Start's first call
		taken <- struct{}{}
		return HistorySample{Time: time.Unix(int64(n), 0), PublishedMessages: 10 * n}
	})
	h.Close() // harmless before Start
	h.Start()
	for range 3 {
		<-taken
	}
	h.Close()
	select {
	case <-h.Done():
	default:
		t.Fatal("the collector is still running after Close")
	}
	rep := h.Report()
	require.InDelta(t, 0.001, rep.IntervalSeconds, 1e-12)
	require.GreaterOrEqual(t, len(rep.Samples), 3)
	require.Zero(t, rep.Samples[0].MessageRate, "the first sample has nothing to compare with")
	require.InDelta(t, 10, rep.Samples[1].MessageRate, 0)
}
