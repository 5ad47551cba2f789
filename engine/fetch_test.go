package engine

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// longPoll is a Fetch frame from the latest offset that asks to wait the
// longest the protocol allows (about 49 days).
func longPoll(topic string, corr uint32) []byte {
	body := (&wire.Fetch{Topic: topic, Start: wire.Start{Kind: wire.StartLatest}, MaxBytes: 1 << 20,
		MaxWaitMs: math.MaxUint32}).Append(nil)
	return append(wire.AppendHeader(nil, wire.TypeFetch, 0, corr, len(body)), body...)
}

// idleTopic creates a one-partition topic that nothing publishes to.
func idleTopic(t *testing.T, e *Engine, name string) *shard.Partition {
	t.Helper()
	tp, err := e.createTopicBy(byBroker, name, 1, nil, false)
	require.NoError(t, err)
	return tp.Parts[0]
}

// expectFetchResult reads a FetchResult for corr and returns its batches.
func (r *rawConn) expectFetchResult(corr uint32) []wire.Batch {
	r.t.Helper()
	f := r.next()
	require.Equal(r.t, wire.TypeFetchResult, f.Type, "frame %v", f.Type)
	require.Equal(r.t, corr, f.Corr)
	_, batches, err := wire.DecodeFetchResult(f.Body)
	require.NoError(r.t, err)
	return batches
}

// TestPipelinedLongPollsAreBounded is the finding of issue 11: one
// connection pipelining thousands of long polls on an idle partition. Past
// the per-connection bound each gets LIMIT_EXCEEDED and the connection
// stays usable; the waits hold no goroutine; and once the connection
// closes, the partition holds none of them and the goroutines are back to
// what they were.
func TestPipelinedLongPollsAreBounded(t *testing.T) {
	const bound, sent = 256, 5000
	e := startBroker(t, func(c *Config) {
		c.MaxFetchesPerConn = bound
		c.MaxFetchWait = time.Hour // none may end on its own during the test
	})
	p := idleTopic(t, e, "idle")
	r := dialRaw(t, e)
	r.hello()
	warm := (&wire.Fetch{Topic: "idle", Start: wire.Start{Kind: wire.StartLatest}}).Append(nil)
	r.sendFrame(wire.TypeFetch, 2, warm)
	require.Empty(t, r.expectFetchResult(2), "an idle partition, no wait: an empty answer")
	baseline := runtime.NumGoroutine()

	var frames []byte
	for i := range sent {
		frames = append(frames, longPoll("idle", uint32(100+i))...)
	}
	r.send(frames)
	for range sent - bound {
		f := r.next()
		require.Equal(t, wire.TypeError, f.Type)
		werr, err := wire.DecodeError(f.Body)
		require.NoError(t, err)
		require.Equal(t, wire.CodeLimitExceeded, werr.Code, "error %v", werr)
		require.GreaterOrEqual(t, f.Corr, uint32(100+bound), "the first %d are taken", bound)
	}
	r.sendFrame(wire.TypePing, 3, nil)
	require.Equal(t, wire.TypePong, r.next().Type, "the connection stays usable")

	require.Eventually(t, func() bool { return p.Waiters() == bound }, 30*time.Second, time.Millisecond)
	require.EqualValues(t, bound, e.srv.Counters().FetchesWaiting)
	require.EqualValues(t, sent-bound, e.srv.Counters().FetchesRefused)
	require.LessOrEqual(t, runtime.NumGoroutine(), baseline+16, "waiting fetches hold no goroutines")
	var m bytes.Buffer
	e.writeMetrics(&m)
	require.Contains(t, m.String(), "ratatoskr_fetches_waiting 256\n")
	require.Contains(t, m.String(), "ratatoskr_fetches_refused_total 4744\n")

	require.NoError(t, r.c.Close())
	require.Eventually(t, func() bool {
		// +1: Eventually runs this function on a goroutine of its own.
		return p.Waiters() == 0 && e.srv.Counters().FetchesWaiting == 0 && runtime.NumGoroutine() <= baseline+1
	}, 30*time.Second, time.Millisecond, "a closed connection's waits are withdrawn and nothing of them runs")
}

// TestLongPollIsAnsweredByData: waiting fetches are all answered, with the
// new batch, when a publish makes it visible.
func TestLongPollIsAnsweredByData(t *testing.T) {
	e := startBroker(t, nil)
	p := idleTopic(t, e, "later")
	r := dialRaw(t, e)
	r.hello()
	for corr := uint32(10); corr < 13; corr++ {
		r.send(longPoll("later", corr))
	}
	require.Eventually(t, func() bool { return p.Waiters() == 3 }, 30*time.Second, time.Millisecond)

	pub := dialRaw(t, e)
	pub.hello()
	pub.send(publishFrame("later", 0, 1, "news"))
	require.Equal(t, wire.TypePublishAck, pub.next().Type)
	got := map[uint32]bool{}
	for range 3 {
		f := r.next()
		require.Equal(t, wire.TypeFetchResult, f.Type)
		_, batches, err := wire.DecodeFetchResult(f.Body)
		require.NoError(t, err)
		require.Len(t, batches, 1)
		got[f.Corr] = true
	}
	require.Equal(t, map[uint32]bool{10: true, 11: true, 12: true}, got)
	require.Zero(t, p.Waiters())
	require.Eventually(t, func() bool { return e.srv.Counters().FetchesWaiting == 0 }, 30*time.Second, time.Millisecond)
}

// TestLongPollTimeoutsLeaveNoWaiter: waits that run out on an idle
// partition (the asked wait, then one cut to MaxFetchWait although it
// asked for 49 days) are answered, empty, and leave nothing registered
// with the partition.
func TestLongPollTimeoutsLeaveNoWaiter(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxFetchWait = 20 * time.Millisecond })
	p := idleTopic(t, e, "quiet")
	r := dialRaw(t, e)
	r.hello()
	short := (&wire.Fetch{Topic: "quiet", Start: wire.Start{Kind: wire.StartLatest}, MaxWaitMs: 10}).Append(nil)
	for corr := uint32(1); corr <= 5; corr++ {
		r.sendFrame(wire.TypeFetch, corr, short)
		require.Empty(t, r.expectFetchResult(corr))
	}
	require.Eventually(t, func() bool { return p.Waiters() == 0 }, 30*time.Second, time.Millisecond,
		"timed-out waits are withdrawn from an idle partition")

	for corr := uint32(6); corr <= 10; corr++ {
		r.send(longPoll("quiet", corr))
		f, err := r.read(30 * time.Second)
		require.NoError(t, err, "the wait was cut to the cap and answered")
		require.Equal(t, wire.TypeFetchResult, f.Type)
		require.Equal(t, corr, f.Corr)
		_, batches, err := wire.DecodeFetchResult(f.Body)
		require.NoError(t, err)
		require.Empty(t, batches)
	}
	require.Eventually(t, func() bool { return p.Waiters() == 0 }, 30*time.Second, time.Millisecond)
	require.Zero(t, e.srv.Counters().FetchesWaiting)
}

// TestDeletingATopicAnswersItsLongPolls: a fetch waiting on a topic that is
// deleted gets UNKNOWN_TOPIC.
func TestDeletingATopicAnswersItsLongPolls(t *testing.T) {
	e := startBroker(t, nil)
	p := idleTopic(t, e, "doomed")
	r := dialRaw(t, e)
	r.hello()
	r.send(longPoll("doomed", 5))
	require.Eventually(t, func() bool { return p.Waiters() == 1 }, 30*time.Second, time.Millisecond)
	require.NoError(t, e.deleteTopicBy(byBroker, "doomed"))
	f := r.next()
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, uint32(5), f.Corr)
	werr, err := wire.DecodeError(f.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeUnknownTopic, werr.Code)
	require.Zero(t, p.Waiters())
}

// TestFetchLimitsAreValidated: both bounds must be set and in range.
func TestFetchLimitsAreValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxFetchesPerConn, cfg.MaxFetchWait = 0, 0
	err := cfg.Validate()
	require.ErrorContains(t, err, "MaxFetchesPerConn")
	require.ErrorContains(t, err, "MaxFetchWait")
	cfg.MaxFetchWait = 50 * 24 * time.Hour
	require.True(t, strings.Contains(cfg.Validate().Error(), "MaxFetchWait"), "past what max_wait_ms can ask")
}
