package engine

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// idemFrame is a Publish of values numbered by producer id from seq.
func idemFrame(topic string, partition int32, corr uint32, id int64, seq int32, values ...string) []byte {
	buf, start := wire.StartFrame(nil, wire.TypePublish, 0, corr)
	buf = wire.AppendBatchPrefix(buf, topic, partition)
	var bb wire.BatchBuilder
	bb.Start(buf, id, seq)
	for _, v := range values {
		bb.Append(time.Now().UnixNano(), nil, []byte(v), nil)
	}
	buf = bb.Finish()
	wire.FinishFrame(buf, start)
	return buf
}

// initProducer asks the broker for a producer id on a raw connection.
func (r *rawConn) initProducer(corr uint32) int64 {
	r.t.Helper()
	r.sendFrame(wire.TypeInitProducer, corr, nil)
	f := r.next()
	require.Equal(r.t, wire.TypeProducerID, f.Type)
	require.Equal(r.t, corr, f.Corr)
	id, err := wire.DecodeProducerID(f.Body)
	require.NoError(r.t, err)
	require.GreaterOrEqual(r.t, id, int64(0))
	return id
}

// publishAck sends frame and reads its answer: the ack, or the error.
func (r *rawConn) publishAck(frame []byte) (wire.PublishAck, *wire.Error) {
	r.t.Helper()
	r.send(frame)
	f := r.next()
	if f.Type == wire.TypeError {
		e, err := wire.DecodeError(f.Body)
		require.NoError(r.t, err)
		return wire.PublishAck{}, e
	}
	require.Equal(r.t, wire.TypePublishAck, f.Type)
	a, err := wire.DecodePublishAck(f.Body)
	require.NoError(r.t, err)
	return a, nil
}

func (r *rawConn) mustAck(frame []byte, base int64, count uint32) {
	r.t.Helper()
	a, e := r.publishAck(frame)
	require.Nil(r.t, e)
	require.Equal(r.t, wire.PublishAck{Partition: 0, BaseOffset: base, Count: count}, a)
}

func (r *rawConn) mustRefuse(frame []byte, code wire.Code) {
	r.t.Helper()
	_, e := r.publishAck(frame)
	require.NotNil(r.t, e)
	require.Equal(r.t, code, e.Code, e.Message)
}

// endOffset is a partition's visible end, as a client sees it.
func endOffset(t *testing.T, e *Engine, topic string) int64 {
	t.Helper()
	info, err := dial(t, e).DescribeTopic(testCtx(t), topic)
	require.NoError(t, err)
	return info.Partitions[0].EndOffset
}

// TestIdempotentProducerDedup: through raw frames, a retried batch gets
// its original offsets and is stored once, on the same connection and on
// another; a gap is refused with OUT_OF_ORDER_SEQUENCE; a producer the
// partition does not know starts at any sequence; an old retry past the
// window is DUPLICATE_SEQUENCE; the ids handed out differ.
func TestIdempotentProducerDedup(t *testing.T) {
	e := startBroker(t, nil)
	require.NoError(t, dial(t, e).CreateTopic(testCtx(t), "idem", client.TopicConfig{Partitions: 1}))
	r := dialRaw(t, e)
	r.hello()
	id := r.initProducer(2)
	require.NotEqual(t, id, r.initProducer(3))

	first := idemFrame("idem", 0, 4, id, 0, "a", "b")
	r.mustAck(first, 0, 2)
	r.mustAck(idemFrame("idem", 0, 5, id, 0, "a", "b"), 0, 2) // the same batch again
	r.mustAck(idemFrame("idem", 0, 6, id, 2, "c"), 2, 1)
	r.mustRefuse(idemFrame("idem", 0, 7, id, 4, "e"), wire.CodeOutOfOrderSequence) // 3 is missing

	other := dialRaw(t, e) // a new connection resends the same frame
	other.hello()
	other.mustAck(first, 0, 2)
	other.mustAck(idemFrame("idem", 0, 8, id, 3, "d"), 3, 1)
	other.mustAck(idemFrame("idem", 0, 9, 12345, 1000, "x"), 4, 1) // unknown: any start
	other.mustAck(publishFrame("idem", 0, 10, "plain"), 5, 1)
	other.mustAck(publishFrame("idem", 0, 11, "plain"), 6, 1) // not idempotent: stored again
	for s := int32(4); s < 9; s++ {
		other.mustAck(idemFrame("idem", 0, 12, id, s, "f"), int64(s+3), 1)
	}
	other.mustRefuse(first, wire.CodeDuplicateSequence) // older than the 5 it remembers
	require.Equal(t, int64(12), endOffset(t, e, "idem"))
	dups := 0.0
	for series, v := range scrape(t, e) {
		if strings.HasPrefix(series, "ratatoskr_shard_duplicate_batches_total{") {
			dups += v
		}
	}
	require.Equal(t, 2.0, dups, "the two resends of the first batch are counted; refusals are not")

	r.sendFrame(wire.TypeInitProducer, 13, []byte{1})
	r.expectErrorThenClose(wire.CodeMalformed)
}

// TestIdempotentProducerEviction: a partition remembers MaxProducers
// producers; the least recently used is evicted, and its retry is then a
// first batch: stored again.
func TestIdempotentProducerEviction(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxProducers = 2 })
	r := dialRaw(t, e)
	r.hello()
	r.mustAck(idemFrame("ev", 0, 2, 1, 0, "a"), 0, 1)
	r.mustAck(idemFrame("ev", 0, 3, 2, 0, "b"), 1, 1)
	r.mustAck(idemFrame("ev", 0, 4, 1, 0, "a"), 0, 1) // producer 1 used: 2 is now the oldest
	r.mustAck(idemFrame("ev", 0, 5, 3, 0, "c"), 2, 1) // evicts 2
	r.mustAck(idemFrame("ev", 0, 6, 1, 0, "a"), 0, 1) // 1 still remembered
	r.mustAck(idemFrame("ev", 0, 7, 2, 0, "b"), 3, 1) // 2 forgotten: stored again
}

// TestIdempotentProducerSurvivesRestart: after a clean restart (the table
// from its snapshot) and after an unclean one (rebuilt from the log: the
// snapshot and the clean marker removed), a retried batch is still
// answered with its original offsets, and the next sequence continues.
func TestIdempotentProducerSurvivesRestart(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(map[bool]string{true: "clean", false: "rebuilt"}[clean], func(t *testing.T) {
			small := func(c *Config) { c.SegmentBytes, c.MaxFrameBytes, c.MaxMessageBytes = 1<<20, 1<<20, 512<<10 }
			e := startBroker(t, small)
			big := string(make([]byte, 50<<10))
			r := dialRaw(t, e)
			r.hello()
			const id = 77
			var frames [][]byte
			for s := range int32(40) {
				f := idemFrame("rs", 0, 2, id, s*2, big, big)
				r.mustAck(f, int64(s)*2, 2)
				frames = append(frames, f)
			}
			info, err := dial(t, e).DescribeTopic(testCtx(t), "rs")
			require.NoError(t, err)
			require.Greater(t, info.Partitions[0].Segments, 2) // the rebuild scans only the last two
			dir := e.cfg.DataDir
			e = restart(t, e, func(c *Config) {
				small(c)
				if !clean {
					require.NoError(t, os.Remove(dir+"/topics/rs/0/"+driver.ProducerSnapshot))
				}
			})
			r = dialRaw(t, e)
			r.hello()
			for i := 35; i < 40; i++ {
				r.mustAck(frames[i], int64(i)*2, 2)
			}
			r.mustRefuse(idemFrame("rs", 0, 3, id, 82, "gap"), wire.CodeOutOfOrderSequence)
			r.mustAck(idemFrame("rs", 0, 4, id, 80, "next"), 80, 1)
			require.Equal(t, int64(81), endOffset(t, e, "rs"))
		})
	}
}
