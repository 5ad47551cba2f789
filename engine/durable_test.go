package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// fetchAll reads a partition from the earliest offset to its end.
func fetchAll(t testing.TB, c *client.Client, topic string, partition int) []client.Delivery {
	t.Helper()
	ctx := testCtx(t)
	var out []client.Delivery
	pos := client.Earliest
	for {
		f, err := c.Fetch(ctx, topic, partition, pos)
		require.NoError(t, err)
		out = append(out, f.Messages...)
		if len(f.Messages) == 0 || f.Next >= f.End {
			return out
		}
		pos = client.AtOffset(f.Next)
	}
}

func values(ds []client.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Value)
	}
	return out
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// restart shuts e down and starts a broker on the same data.
func restart(t *testing.T, e *Engine, mutate func(*Config)) *Engine {
	t.Helper()
	require.NoError(t, e.Shutdown(context.Background()))
	dir, fsys := e.cfg.DataDir, e.cfg.FS
	return startBroker(t, func(c *Config) {
		c.DataDir, c.FS = dir, fsys
		if mutate != nil {
			mutate(c)
		}
	})
}

func TestTopicsAndMessagesSurviveRestart(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "durable", client.TopicConfig{Partitions: 2, Fsync: "interval=50ms",
		Retention: 2 * time.Hour, RetentionBytes: 1 << 30}))
	require.NoError(t, c.CreateTopic(ctx, "volatile", client.TopicConfig{Storage: "memory"}))
	for i := range 100 {
		_, err := c.Publish(ctx, "durable", client.Message{Value: fmt.Appendf(nil, "m%d", i)}, client.ToPartition(1))
		require.NoError(t, err)
		_, err = c.Publish(ctx, "volatile", client.Message{Value: []byte("gone")})
		require.NoError(t, err)
	}
	before, err := c.DescribeTopic(ctx, "durable")
	require.NoError(t, err)

	e2 := restart(t, e, nil)
	c2 := dial(t, e2)
	list, err := c2.ListTopics(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.TopicSummary{{Name: "durable", Partitions: 2}, {Name: "volatile", Partitions: 1}}, list)
	after, err := c2.DescribeTopic(ctx, "durable")
	require.NoError(t, err)
	require.Equal(t, before.Config, after.Config, "the config survives")
	require.Equal(t, "interval=50ms", after.Config["fsync"])
	require.Equal(t, int64(100), after.Partitions[1].EndOffset)
	require.Equal(t, seq("m", 100), values(fetchAll(t, c2, "durable", 1)))
	vol, err := c2.DescribeTopic(ctx, "volatile")
	require.NoError(t, err)
	require.Equal(t, int64(0), vol.Partitions[0].EndOffset, "a memory topic starts empty")

	// Publishing continues at the next offset.
	ack, err := c2.Publish(ctx, "durable", client.Message{Value: []byte("m100")}, client.ToPartition(1))
	require.NoError(t, err)
	require.Equal(t, int64(100), ack.Offset)

	// A deleted topic stays deleted, and its data is gone.
	require.NoError(t, c2.DeleteTopic(ctx, "durable"))
	require.Eventually(t, func() bool {
		_, err := os.Stat(e2.cfg.DataDir + "/topics/durable")
		return os.IsNotExist(err)
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return trashEmpty(t, e2) }, 30*time.Second, 10*time.Millisecond,
		"the reclaimer deleted the segments")
	require.Positive(t, scrape(t, e2)["ratatoskr_storage_reclaimed_bytes_total"])
	e3 := restart(t, e2, nil)
	list, err = dial(t, e3).ListTopics(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.TopicSummary{{Name: "volatile", Partitions: 1}}, list)
}

// TestReplayThenFollow: a subscriber starting at the earliest offset while
// a producer keeps publishing gets every message exactly once, in order,
// across the switch from the log to the live tail.
func TestReplayThenFollow(t *testing.T) {
	for _, fsync := range []string{"always", "never"} {
		t.Run(fsync, func(t *testing.T) {
			e := startBroker(t, nil)
			ctx := testCtx(t)
			pub := dial(t, e)
			require.NoError(t, pub.CreateTopic(ctx, "rf", client.TopicConfig{Fsync: fsync}))
			const before, total = 3000, 6000
			for i := range before {
				require.NoError(t, pub.PublishAsync(ctx, "rf", client.Message{Value: fmt.Appendf(nil, "%d", i)}))
			}
			require.NoError(t, pub.Flush(ctx))

			var mu sync.Mutex
			var got []string
			done := make(chan struct{})
			sc := dial(t, e)
			_, err := sc.Subscribe(ctx, "rf", func(d *client.Delivery) {
				mu.Lock()
				got = append(got, string(d.Value))
				if len(got) == total {
					close(done)
				}
				mu.Unlock()
			}, client.StartAt(client.Earliest))
			require.NoError(t, err)
			for i := before; i < total; i++ {
				require.NoError(t, pub.PublishAsync(ctx, "rf", client.Message{Value: fmt.Appendf(nil, "%d", i)}))
				if i%500 == 0 {
					time.Sleep(time.Millisecond) // let the replay and the tail interleave
				}
			}
			require.NoError(t, pub.Flush(ctx))
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				mu.Lock()
				t.Fatalf("got %d of %d", len(got), total)
			}
			mu.Lock()
			defer mu.Unlock()
			want := make([]string, total)
			for i := range want {
				want[i] = fmt.Sprint(i)
			}
			require.Equal(t, want, got, "no gap and no duplicate at the switch")
		})
	}
}

func TestSubscribeFromOffsetAndTime(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	var mid time.Time
	for i := range 50 {
		if i == 30 {
			// Real time between the two halves, which the time-based start
			// under test tells apart by their timestamps.
			time.Sleep(5 * time.Millisecond)
			mid = time.Now()
		}
		_, err := c.Publish(ctx, "pos", client.Message{Value: fmt.Appendf(nil, "%d", i)})
		require.NoError(t, err)
	}
	first := func(p client.Position) client.Delivery {
		sc := dial(t, e)
		_, ch, err := sc.SubscribeChan(ctx, "pos", 100, client.StartAt(p))
		require.NoError(t, err)
		return <-ch
	}
	require.Equal(t, "17", string(first(client.AtOffset(17)).Value))
	require.Equal(t, int64(17), first(client.AtOffset(17)).Offset)
	require.Equal(t, "0", string(first(client.Earliest).Value))
	require.Equal(t, "30", string(first(client.AtTime(mid)).Value))

	_, err := dial(t, e).Subscribe(ctx, "pos", func(*client.Delivery) {}, client.StartAt(client.AtOffset(51)))
	require.ErrorIs(t, err, client.ErrOffsetOutOfRange)
}

func TestFetchAndLongPoll(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	for i := range 10 {
		_, err := c.Publish(ctx, "pull", client.Message{Value: fmt.Appendf(nil, "%d", i)})
		require.NoError(t, err)
	}
	f, err := c.Fetch(ctx, "pull", 0, client.AtOffset(4))
	require.NoError(t, err)
	require.Equal(t, []string{"4", "5", "6", "7", "8", "9"}, values(f.Messages))
	require.Equal(t, int64(10), f.Next)
	require.Equal(t, int64(10), f.End)

	// Nothing new, no wait: an empty answer at once.
	f, err = c.Fetch(ctx, "pull", 0, client.AtOffset(10))
	require.NoError(t, err)
	require.Empty(t, f.Messages)

	// A long poll returns when a message arrives.
	go func() {
		// Publish once the Fetch waits at the broker: its wake-up is what
		// is tested, not an answer to a message already there.
		for deadline := time.Now().Add(30 * time.Second); e.srv.Counters().FetchesWaiting == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // poll interval
		}
		_, _ = c.Publish(ctx, "pull", client.Message{Value: []byte("late")})
	}()
	start := time.Now()
	f, err = c.Fetch(ctx, "pull", 0, client.AtOffset(10), client.MaxWait(5*time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"late"}, values(f.Messages))
	require.Less(t, time.Since(start), 3*time.Second)

	// ... and times out empty.
	start = time.Now()
	f, err = c.Fetch(ctx, "pull", 0, client.Latest, client.MaxWait(150*time.Millisecond))
	require.NoError(t, err)
	require.Empty(t, f.Messages)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

	_, err = c.Fetch(ctx, "pull", 0, client.AtOffset(99))
	require.ErrorIs(t, err, client.ErrOffsetOutOfRange)
	_, err = c.Fetch(ctx, "nope", 0, client.Earliest)
	require.ErrorIs(t, err, client.ErrUnknownTopic)
	_, err = c.Fetch(ctx, "pull", 3, client.Earliest)
	require.ErrorIs(t, err, client.ErrUnknownPartition)
	f, err = c.Fetch(ctx, "pull", 0, client.Earliest, client.MaxBytes(1))
	require.NoError(t, err)
	require.Len(t, f.Messages, 1, "at least one batch, however small the bound")
}

// TestDiskFullFailsPublishesAndKeepsReads: with the disk full, publishes
// fail with the storage-full code, reads keep working, and publishing
// resumes when space returns.
func TestDiskFullFailsPublishesAndKeepsReads(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir = efs, "data" })
	ctx := testCtx(t)
	c := dial(t, e)
	for i := range 20 {
		_, err := c.Publish(ctx, "full", client.Message{Value: fmt.Appendf(nil, "%d", i)})
		require.NoError(t, err)
	}
	efs.InjectWrite(func(name string) bool { return len(name) > 4 && name[len(name)-4:] == ".log" }, syscall.ENOSPC, 0)
	_, err := c.Publish(ctx, "full", client.Message{Value: []byte("x")})
	require.ErrorIs(t, err, client.ErrStorageFull)
	require.False(t, client.MayHaveBeenStored(err))
	require.Equal(t, seq("", 20), values(fetchAll(t, c, "full", 0)), "reads keep working")
	efs.Clear()
	ack, err := c.Publish(ctx, "full", client.Message{Value: []byte("20")})
	require.NoError(t, err)
	require.Equal(t, int64(20), ack.Offset, "the failed publish took no offset")
}

// TestFailedFsyncOutcomeUnknown: a publish written but whose fsync failed
// is answered OUTCOME_UNKNOWN, since it can be in the log after a restart
// (a producer that republishes it writes it twice); later publishes get
// STORAGE_ERROR (not stored) until the restart.
func TestFailedFsyncOutcomeUnknown(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir = efs, "data" })
	ctx := testCtx(t)
	c := dial(t, e)
	_, err := c.Publish(ctx, "eio", client.Message{Value: []byte("0")})
	require.NoError(t, err)
	efs.InjectSync(nil, syscall.EIO, 0)
	_, err = c.Publish(ctx, "eio", client.Message{Value: []byte("1")})
	require.ErrorIs(t, err, client.ErrOutcomeUnknown, "an unsynced publish is never acked, and may be stored")
	require.True(t, client.MayHaveBeenStored(err))
	efs.Clear()
	_, err = c.Publish(ctx, "eio", client.Message{Value: []byte("2")})
	require.ErrorIs(t, err, client.ErrStorageError, "the partition refuses writes until restart")
	require.False(t, client.MayHaveBeenStored(err))
	require.Contains(t, err.Error(), "read-only until the broker restarts: fsync failed: ")
	require.Equal(t, []string{"0"}, values(fetchAll(t, c, "eio", 0)))
	requireAnswered(t, e)

	e2 := restart(t, e, nil)
	require.Equal(t, []string{"0", "1"}, values(fetchAll(t, dial(t, e2), "eio", 0)),
		"the publish whose outcome was unknown is there after the restart")
}

// TestFailedWriteIsNotStored: a publish whose write failed and was cut off
// the file is answered STORAGE_FULL or STORAGE_ERROR: it is not stored, so
// a retry cannot duplicate it, and the partition goes on.
func TestFailedWriteIsNotStored(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir = efs, "data" })
	ctx := testCtx(t)
	c := dial(t, e)
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		efs.InjectWrite(inPartition("w", 0), errno, 0)
		_, err := c.Publish(ctx, "w", client.Message{Value: []byte("lost")})
		require.ErrorIs(t, err, map[syscall.Errno]error{syscall.ENOSPC: client.ErrStorageFull, syscall.EIO: client.ErrStorageError}[errno])
		require.False(t, client.MayHaveBeenStored(err), "%v", err)
		efs.Clear()
	}
	_, err := c.Publish(ctx, "w", client.Message{Value: []byte("kept")})
	require.NoError(t, err)
	requireAnswered(t, e)
	e2 := restart(t, e, nil)
	require.Equal(t, []string{"kept"}, values(fetchAll(t, dial(t, e2), "w", 0)))
}

// TestFailedCutIsOutcomeUnknown: a failed write that cannot be cut off the
// file may leave the batch whole on disk, where recovery finds it: its
// publish is OUTCOME_UNKNOWN, and the partition turns read-only.
func TestFailedCutIsOutcomeUnknown(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir = efs, "data" })
	ctx := testCtx(t)
	c := dial(t, e)
	_, err := c.Publish(ctx, "cut", client.Message{Value: []byte("0")})
	require.NoError(t, err)
	efs.ShortWrite(inPartition("cut", 0), 1<<20, 0)
	efs.Inject(vfs.OpTruncate, inPartition("cut", 0), syscall.EIO, 0)
	_, err = c.Publish(ctx, "cut", client.Message{Value: []byte("1")})
	require.ErrorIs(t, err, client.ErrOutcomeUnknown)
	require.True(t, client.MayHaveBeenStored(err))
	efs.Clear()
	_, err = c.Publish(ctx, "cut", client.Message{Value: []byte("2")})
	require.ErrorIs(t, err, client.ErrStorageError)
	require.Contains(t, err.Error(), "read-only until the broker restarts: a failed write could not be cut off")
	requireAnswered(t, e)
}

// requireAnswered checks that every publish e took has been answered:
// none still counts against the inbound memory bound.
func requireAnswered(t *testing.T, e *Engine) {
	t.Helper()
	require.Eventually(t, func() bool { return e.srv.Counters().InboundPublish == 0 }, 30*time.Second, time.Millisecond,
		"answered publishes no longer count against the inbound bound")
}

// TestCrashSnapshotsKeepAckedMessages publishes with acks (fsync=always)
// from several producers and, at random moments, takes the state a crash
// would leave (the in-memory file system's durable part). A broker started
// on each snapshot must hold every message acked before it, exactly once,
// in per-partition order.
func TestCrashSnapshotsKeepAckedMessages(t *testing.T) {
	fsys := vfs.NewMem()
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir, c.SegmentBytes = fsys, "data", 4<<20 })
	ctx := testCtx(t)
	require.NoError(t, dial(t, e).CreateTopic(ctx, "crash", client.TopicConfig{Partitions: 2}))

	type snapshot struct {
		fs    *vfs.MemFS
		acked [2]int64 // per partition: messages acked before the snapshot
	}
	var acked [2]atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := range 2 {
		c := dial(t, e)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.Publish(ctx, "crash", client.Message{Value: fmt.Appendf(nil, "%d-%d", p, i)}, client.ToPartition(p))
				if err != nil {
					t.Error(err)
					return
				}
				acked[p].Store(int64(i + 1))
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var snaps []snapshot
	for range 8 {
		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond) // a random crash point, under test: not a wait
		s := snapshot{acked: [2]int64{acked[0].Load(), acked[1].Load()}}
		s.fs = fsys.CrashWith(rng)
		snaps = append(snaps, s)
	}
	close(stop)
	wg.Wait()

	for i, s := range snaps {
		e2 := startBroker(t, func(c *Config) { c.FS, c.DataDir = s.fs, "data" })
		c := dial(t, e2)
		for p := range 2 {
			got := values(fetchAll(t, c, "crash", p))
			require.GreaterOrEqual(t, int64(len(got)), s.acked[p], "snapshot %d partition %d lost acked messages", i, p)
			for j, v := range got {
				require.Equal(t, fmt.Sprintf("%d-%d", p, j), v, "snapshot %d partition %d", i, p)
			}
		}
		require.NoError(t, e2.Shutdown(context.Background()))
	}
	require.Positive(t, snaps[len(snaps)-1].acked[0])
}

// corruptOneRecord publishes 200 messages to topic "bits" on a broker
// with 4 MiB segments, stops it, flips a bit inside a record in the middle
// of the first segment, and returns the config change that starts a broker
// on that data.
func corruptOneRecord(t *testing.T) func(*Config) {
	t.Helper()
	small := func(c *Config) { c.SegmentBytes = 4 << 20 }
	e := startBroker(t, small)
	c := dial(t, e)
	for i := range 200 {
		_, err := c.Publish(testCtx(t), "bits", client.Message{Value: fmt.Appendf(nil, "value-%d", i)})
		require.NoError(t, err)
	}
	dir := e.cfg.DataDir
	require.NoError(t, e.Shutdown(context.Background()))

	seg := dir + "/topics/bits/0/00000000000000000000.log"
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	at := len(b) / 2
	for b[at] < 'a' || b[at] > 'z' {
		at++
	}
	b[at] ^= 0x20
	require.NoError(t, os.WriteFile(seg, b, 0o644))
	return func(c *Config) { small(c); c.DataDir = dir }
}

func TestCorruptionIsReportedAndSkipped(t *testing.T) {
	ctx := testCtx(t)
	reopen := corruptOneRecord(t)
	e2 := startBroker(t, reopen)
	c2 := dial(t, e2)
	all := fetchAll(t, c2, "bits", 0)
	got := values(all)
	require.Len(t, got, 199, "one message lost to the flipped bit; the rest read")
	missing := int64(199)
	for i, d := range all {
		if d.Offset != int64(i) {
			missing = int64(i)
			break
		}
	}
	f, err := c2.Fetch(ctx, "bits", 0, client.AtOffset(missing))
	require.NoError(t, err)
	require.NotEmpty(t, f.Messages, "a fetch inside the corrupt range moves past it")
	require.Equal(t, missing+1, f.Messages[0].Offset)
	info, err := c2.DescribeTopic(ctx, "bits")
	require.NoError(t, err)
	require.Equal(t, 1, info.Partitions[0].Corrupt, "the corrupt range is reported")
	require.Equal(t, int64(200), info.Partitions[0].EndOffset, "nothing was cut")
}

func TestRetentionDeletesOldSegments(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.SegmentBytes, c.MaxFrameBytes, c.MaxMessageBytes = 1<<20, 1<<20, 64<<10
		c.RetentionInterval = 20 * time.Millisecond
	})
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "ret", client.TopicConfig{RetentionBytes: 2 << 20}))
	value := make([]byte, 10_000)
	for range 800 { // ~8 MB: eight segments
		require.NoError(t, c.PublishAsync(ctx, "ret", client.Message{Value: value}))
	}
	require.NoError(t, c.Flush(ctx))
	require.Eventually(t, func() bool {
		info, err := c.DescribeTopic(ctx, "ret")
		return err == nil && info.Partitions[0].Bytes <= 3<<20 && info.Partitions[0].StartOffset > 0
	}, 5*time.Second, 20*time.Millisecond, "retention by bytes deleted the oldest segments")
	_, err := c.Fetch(ctx, "ret", 0, client.AtOffset(0))
	require.ErrorIs(t, err, client.ErrOffsetOutOfRange)
	f, err := c.Fetch(ctx, "ret", 0, client.Earliest)
	require.NoError(t, err)
	require.NotEmpty(t, f.Messages)
	require.Eventually(t, func() bool { return trashEmpty(t, e) }, 30*time.Second, 10*time.Millisecond,
		"the reclaimer deleted the segments retention dropped")
}

// trashEmpty reports whether the reclaimer has nothing left to delete.
func trashEmpty(t *testing.T, e *Engine) bool {
	entries, err := os.ReadDir(e.cfg.DataDir + "/" + trashDir)
	require.NoError(t, err)
	return len(entries) == 0 && e.reclaim.Idle()
}

// TestDeleteThenRecreateKeepsTheNewTopic deletes a durable topic and at
// once creates one of the same name, many times: the new topic must never
// open the old one's segments, nor lose its own to the old one's late
// drop.
func TestDeleteThenRecreateKeepsTheNewTopic(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	for round := range 30 {
		require.NoError(t, c.CreateTopic(ctx, "again", client.TopicConfig{Partitions: 2, Storage: "disk"}))
		for i := range 20 {
			_, err := c.Publish(ctx, "again", client.Message{Value: fmt.Appendf(nil, "r%d-%d", round, i)},
				client.ToPartition(i%2))
			require.NoError(t, err)
		}
		var want []string
		for i := 0; i < 20; i += 2 {
			want = append(want, fmt.Sprintf("r%d-%d", round, i))
		}
		require.Equal(t, want, values(fetchAll(t, c, "again", 0)), "round %d", round)
		require.NoError(t, c.DeleteTopic(ctx, "again"))
	}
}
