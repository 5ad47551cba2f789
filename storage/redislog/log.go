package redislog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Log is one partition's log in Redis. It is a storage.Staged log: the
// shard stages batches, and its remote writer (storage.Remote) writes
// them with WritePending, all in one transaction, off the shard's thread.
// Sync has nothing to do: what Redis acknowledged is as durable as its
// persistence settings make it.
type Log struct {
	s            *Store
	name         string // "topic/partition", for messages
	stream, meta string

	start   atomic.Int64
	visible atomic.Int64
	written atomic.Int64
	startZ  atomic.Int64 // z (bytes appended before it) of the first batch held
	endZ    atomic.Int64 // bytes appended through the written end
	avg     atomic.Int64 // a recent batch's size, to size reads

	// The writer's state, guarded by wmu.
	wmu   sync.Mutex
	maxTS int64 // the greatest timestamp written
	// doubt: a write's outcome is unknown (it timed out or its connection
	// broke after it was sent); the next write removes whatever it left
	// above the written end first.
	doubt bool
	cmds  rueidis.Commands

	sq storage.StageQueue // the batches staged for WritePending

	failed   atomic.Pointer[string] // why the log refuses writes for good (another writer)
	closed   atomic.Bool
	cmu      sync.Mutex
	corrupt  []storage.Range
	readErrs atomic.Uint64
}

var _ storage.Staged = (*Log)(nil)
var _ storage.Remote = (*Log)(nil)

// Keys are the stream's and the hash's keys of a partition: the name in
// a hash tag, so that both live on one node of a Redis Cluster.
func (s *Store) Keys(topic string, partition int) (stream, meta string) {
	tag := s.cfg.Prefix + ":{" + topic + "/" + strconv.Itoa(partition) + "}:"
	return tag + "log", tag + "meta"
}

// OpenLog opens the log of a topic's partition, loading where it starts
// and ends. With create (a new topic), keys left in Redis under the same
// name are an error, not data to adopt: they belong to another broker
// sharing the prefix, or to a topic deleted while Redis was unreachable.
func (s *Store) OpenLog(ctx context.Context, topic string, partition int, create bool) (*Log, error) {
	stream, meta := s.Keys(topic, partition)
	l := &Log{s: s, name: topic + "/" + strconv.Itoa(partition), stream: stream, meta: meta}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	c := s.client
	res := c.DoMulti(ctx,
		c.B().Type().Key(stream).Build(),
		c.B().Type().Key(meta).Build(),
		c.B().Hmget().Key(meta).Field("end", "z", "t").Build(),
		c.B().Xrange().Key(stream).Start("-").End("+").Count(1).Build())
	for i, key := range []string{stream, meta} {
		want := "stream"
		if i == 1 {
			want = "hash"
		}
		if typ, err := res[i].ToString(); err == nil && typ != want && typ != "none" {
			return nil, fmt.Errorf("redis at %s: key %s holds a %s, not a %s: not a partition log", s.addr, key, typ, want)
		}
	}
	for _, r := range res {
		if err := r.Error(); err != nil {
			s.failed(err)
			if isNetworkError(err) {
				return nil, s.unavailable(err)
			}
			return nil, fmt.Errorf("redis at %s: open %s: %w", s.addr, l.name, err)
		}
	}
	s.answered()
	vals, _ := res[2].ToArray()
	var num [3]int64
	present := false
	for i := range vals {
		if vals[i].IsNil() {
			continue
		}
		str, _ := vals[i].ToString()
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("redis at %s: key %s holds %q for %d: not a partition log", s.addr, meta, str, i)
		}
		num[i], present = n, true
	}
	head, _ := res[3].ToArray()
	if create && (present || len(head) > 0) {
		return nil, fmt.Errorf("redis at %s already holds a log under %s: another broker uses the prefix %q, "+
			"or a topic of that name was deleted while Redis was unreachable (delete the keys to reuse the name)",
			s.addr, stream, s.cfg.Prefix)
	}
	end, endZ := num[0], num[1]
	start, startZ := end, endZ
	if len(head) > 0 {
		e, err := parseEntry(&head[0])
		if err != nil {
			return nil, fmt.Errorf("redis at %s: %s: first entry: %w", s.addr, stream, err)
		}
		start, startZ = min(e.base, end), e.z
	}
	l.start.Store(start)
	l.written.Store(end)
	l.visible.Store(end)
	l.startZ.Store(startZ)
	l.endZ.Store(endZ)
	l.maxTS = num[2]
	l.avg.Store(4096)
	return l, nil
}

// Describe says, for topic describe, which server keeps the log and what
// its persistence makes of an acknowledged message.
func (l *Log) Describe() []wire.KV {
	return []wire.KV{{Key: "redis", Value: l.s.addr}, {Key: "redis-persistence", Value: l.s.Persistence().String()}}
}

// Remote names the backend, for storage.Remote.
func (l *Log) Remote() string { return "redis" }

// Store returns the store the log is kept in.
func (l *Log) Store() *Store { return l.s }

// Append stages and writes a batch at once, for callers that write
// synchronously.
func (l *Log) Append(b *storage.Buf, batch wire.Batch) error {
	if err := l.Stage(b, batch); err != nil {
		return err
	}
	_, err := l.WritePending()
	if err != nil {
		l.Resume()
	}
	return err
}

// Stage queues a batch for WritePending and retains b. After a failed
// write it fails with that write's error until Resume.
func (l *Log) Stage(b *storage.Buf, batch wire.Batch) error {
	if why := l.failed.Load(); why != nil {
		return storage.ErrFailed
	}
	if l.closed.Load() {
		return storage.ErrClosed
	}
	return l.sq.Stage(b, batch)
}

// Resume lets Stage accept batches after a failed write.
func (l *Log) Resume() { l.sq.Resume() }

// maxWrite bounds one transaction, so a large backlog goes in a few calls
// rather than one that holds Redis for long.
const (
	maxWriteBytes   = 8 << 20
	maxWriteBatches = 1024
)

// WritePending writes every staged batch, in as few transactions as
// maxWrite allows, and returns the end offset written. On a failure the
// batches of the failed call and after it are dropped (released), and
// Stage fails until Resume. The error says what became of them:
//   - storage.ErrUnavailable: the call never reached Redis, or Redis
//     refused it (out of memory); they are not stored;
//   - *storage.InDoubtError: the call was sent and no answer came; they
//     may be stored, and the next write removes them first;
//   - storage.ErrFailed: the log does not end where this broker wrote it
//     (another writer); the log refuses writes until the broker restarts.
func (l *Log) WritePending() (int64, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	taken := l.sq.Take()
	rest := taken
	var err error
	for len(rest) > 0 && err == nil {
		var n int
		n, err = l.writeSome(rest)
		storage.ReleaseStaged(rest[:n])
		rest = rest[n:]
	}
	storage.ReleaseStaged(rest)
	l.sq.Done(taken, err)
	return l.written.Load(), err
}

// writeSome writes the longest prefix of rest within maxWrite in one
// transaction and returns how many batches it wrote.
func (l *Log) writeSome(rest []storage.StagedBatch) (int, error) {
	if why := l.failed.Load(); why != nil {
		return 0, fmt.Errorf("%w: %s", storage.ErrFailed, *why)
	}
	if !l.s.up.Load() {
		return 0, l.s.unavailable(l.s.Health())
	}
	base := l.written.Load()
	z, ts := l.endZ.Load(), l.maxTS
	c := l.s.client
	cmds := append(l.cmds[:0], c.B().Multi().Build())
	n, size := 0, 0
	for _, st := range rest {
		if n > 0 && (n == maxWriteBatches || size+len(st.Batch) > maxWriteBytes) {
			break
		}
		m := max(st.Batch.MaxTimestamp(), 0)
		ts = max(ts, m)
		cmds = append(cmds, c.B().Xadd().Key(l.stream).Id(strconv.FormatInt(st.Batch.BaseOffset(), 10)+"-1").
			FieldValue().FieldValue("b", rueidis.BinaryString(st.Batch)).FieldValue("t", pad(ts)).
			FieldValue("z", pad(z)).FieldValue("m", pad(m)).Build())
		z += int64(len(st.Batch))
		size += len(st.Batch)
		n++
	}
	last := rest[n-1].Batch
	end := last.BaseOffset() + int64(last.Count())
	cmds = append(cmds, c.B().Hset().Key(l.meta).FieldValue().FieldValue("end", strconv.FormatInt(end, 10)).
		FieldValue("z", strconv.FormatInt(z, 10)).FieldValue("t", strconv.FormatInt(ts, 10)).FieldValue("v", "1").Build(),
		c.B().Exec().Build())
	defer clear(cmds) // drop the references to the batches' bytes
	l.cmds = cmds
	var gap int64 = -1
	err := c.Dedicated(func(dc rueidis.DedicatedClient) error {
		var err error
		gap, err = l.transact(dc, base, cmds)
		return err
	})
	if err != nil {
		l.s.failed(err)
		return 0, l.writeFailed(err, base, end)
	}
	l.s.answered()
	if gap >= 0 {
		l.recordCorrupt(storage.Range{From: max(gap, l.start.Load()), To: base},
			"redis lost acknowledged batches: it restarted without them")
	}
	l.doubt = false
	l.maxTS = ts
	l.endZ.Store(z)
	l.written.Store(end)
	l.avg.Store(int64(size / n))
	return n, nil
}

// An append is a transaction on a connection of its own: WATCH the two
// keys and read where the log ends; if that is where this broker wrote
// it, MULTI, the XADDs and the end's update, EXEC. So the batches are
// applied all together (Redis writes a transaction to its AOF as one),
// or none when Redis is out of memory (it refuses the commands as they
// are queued), or none when anything else touched the keys after the
// check (EXEC answers nil). The entries are plain XADDs with explicit
// IDs: a Lua script would copy every batch twice more inside Redis, which
// cost it a third of its write rate (docs/PERFORMANCE.md, issue 17).

// errFenced is the end another writer left, found by the check.
type errFenced struct{ cur int64 }

func (e errFenced) Error() string { return "the log ends at offset " + strconv.FormatInt(e.cur, 10) }

// errUnsent wraps a failure before the transaction was sent: nothing of
// it can be stored.
type errUnsent struct{ err error }

func (e errUnsent) Error() string { return e.err.Error() }
func (e errUnsent) Unwrap() error { return e.err }

// errForeign is a transaction that ran with errors: something else
// changed the keys in a way the check cannot see.
type errForeign struct{ err error }

func (e errForeign) Error() string { return e.err.Error() }
func (e errForeign) Unwrap() error { return e.err }

// transact checks where the log ends and runs cmds (MULTI ... EXEC) if
// it ends at base, after removing what a write in doubt left above base.
// It returns the end Redis had when that is below base (it lost batches;
// the write goes on from base), or -1.
func (l *Log) transact(dc rueidis.DedicatedClient, base int64, cmds rueidis.Commands) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	unwatch := func() { _ = dc.Do(ctx, dc.B().Unwatch().Build()).Error() }
	gap := int64(-1)
	for attempt := 0; ; attempt++ {
		res := dc.DoMulti(ctx, dc.B().Watch().Key(l.stream, l.meta).Build(),
			dc.B().Hget().Key(l.meta).Field("end").Build(),
			dc.B().Type().Key(l.stream).Build(), dc.B().Type().Key(l.meta).Build())
		for _, r := range res {
			if err := r.NonRedisError(); err != nil {
				return gap, errUnsent{err}
			}
		}
		for i, want := range []string{"stream", "hash"} {
			if typ, _ := res[2+i].ToString(); typ != want && typ != "none" {
				unwatch()
				return gap, fmt.Errorf("key %s holds a %s, not a %s: not a partition log",
					[]string{l.stream, l.meta}[i], typ, want)
			}
		}
		cur := int64(0)
		if v, err := res[1].ToString(); err == nil {
			if cur, err = strconv.ParseInt(v, 10, 64); err != nil {
				unwatch()
				return gap, fmt.Errorf("key %s holds end %q: not a partition log", l.meta, v)
			}
		}
		switch {
		case cur > base && l.doubt:
			// What the write in doubt left: removed first, and the
			// transaction is watched anew (the cut touched the keys).
			err := dc.Do(ctx, dc.B().Eval().Script(cutLua).Numkeys(2).Key(l.stream, l.meta).
				Arg(strconv.FormatInt(base, 10), strconv.FormatInt(l.endZ.Load(), 10), strconv.FormatInt(l.maxTS, 10)).
				Build()).Error()
			unwatch()
			if err != nil {
				return gap, errUnsent{err}
			}
			l.doubt = false
			continue
		case cur > base:
			unwatch()
			return gap, errFenced{cur}
		case cur < base:
			gap = cur
		}
		res = dc.DoMulti(ctx, cmds...)
		exec := res[len(res)-1]
		if err := exec.NonRedisError(); err != nil {
			return gap, err // sent: in doubt
		}
		if err := exec.Error(); err != nil {
			// EXECABORT: a command was refused as it was queued (OOM).
			for _, r := range res[:len(res)-1] {
				if qerr := r.Error(); qerr != nil {
					return gap, qerr
				}
			}
			return gap, err
		}
		if msg, _ := exec.ToMessage(); msg.IsNil() {
			if attempt < 2 {
				continue // the keys were touched after the check: check again
			}
			return gap, errFenced{-1}
		}
		done, err := exec.ToArray()
		if err != nil {
			return gap, errForeign{err}
		}
		for _, r := range done {
			if err := r.Error(); err != nil {
				return gap, errForeign{err}
			}
		}
		return gap, nil
	}
}

// writeFailed classifies a failed append of the batches from base up to
// end.
func (l *Log) writeFailed(err error, base, end int64) error {
	var fenced errFenced
	var foreign errForeign
	var unsent errUnsent
	switch {
	case errors.As(err, &fenced):
		why := fmt.Sprintf("the log in redis at %s ends at offset %d, not %d where this broker wrote it: "+
			"another broker writes to %s (give each its own --redis-prefix)", l.s.addr, fenced.cur, base, l.stream)
		if fenced.cur < 0 {
			why = fmt.Sprintf("the keys of %s in redis at %s keep changing under this broker: another broker writes to "+
				"them (give each its own --redis-prefix)", l.stream, l.s.addr)
		}
		return l.fail(why)
	case errors.As(err, &foreign):
		return l.fail(fmt.Sprintf("an append to %s in redis at %s failed part way: something else changed the keys: %v",
			l.stream, l.s.addr, foreign.err))
	case errors.As(err, &unsent):
		if re, ok := rueidis.IsRedisErr(unsent.err); ok {
			return fmt.Errorf("%w: redis at %s: append to %s: %s", storage.ErrUnavailable, l.s.addr, l.stream, re.Error())
		}
		return l.s.unavailable(unsent.err)
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		if isOOM(err) {
			return l.s.unavailable(fmt.Errorf("out of memory (maxmemory): %s", re.Error()))
		}
		// Refused as queued, or checked before anything was queued:
		// nothing was stored.
		return fmt.Errorf("%w: redis at %s: append to %s: %s", storage.ErrUnavailable, l.s.addr, l.stream, re.Error())
	}
	if notSent(err) {
		return l.s.unavailable(err)
	}
	l.doubt = true
	return &storage.InDoubtError{Err: l.s.unavailable(err), End: end}
}

// fail makes the log refuse writes until the broker restarts, saying why.
func (l *Log) fail(why string) error {
	l.failed.Store(&why)
	l.s.cfg.Logger.Error("redis log refuses writes until restart", "partition", l.name, "why", why)
	return fmt.Errorf("%w: %s", storage.ErrFailed, why)
}

// pad formats n as 19 digits (see scripts.go).
func pad(n int64) string {
	var b [19]byte
	s := strconv.AppendInt(b[:0], n, 10)
	if len(s) >= 19 {
		return string(s)
	}
	out := make([]byte, 19)
	copy(out[19-len(s):], s)
	for i := range 19 - len(s) {
		out[i] = '0'
	}
	return string(out)
}

// Sync returns the written end: Redis acknowledged it, and it is as
// durable as the server's persistence makes it.
func (l *Log) Sync() (int64, error) { return l.written.Load(), nil }

// SetVisible lets readers see batches below end.
func (l *Log) SetVisible(end int64) { l.visible.Store(end) }

// Bounds returns the first offset held and the visible end.
func (l *Log) Bounds() (int64, int64) { return l.start.Load(), l.visible.Load() }

// entry is a stream entry parsed: its batch's bytes alias the reply.
type entry struct {
	base  int64
	batch wire.Batch
	z     int64
	bad   string // why the entry is not a valid batch; "" when it is
}

// errNotEntry is a reply that is not a stream entry.
var errNotEntry = errors.New("not a stream entry")

// splitEntry reads a stream entry [id, [field, value, ...]]: the base
// offset its ID starts with, and its fields (nil when they are not a
// list).
func splitEntry(m *rueidis.RedisMessage) (int64, []rueidis.RedisMessage, error) {
	parts, err := m.ToArray()
	if err != nil || len(parts) != 2 {
		return 0, nil, errNotEntry
	}
	id, err := parts[0].ToString()
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", errNotEntry, err)
	}
	ms, _, _ := strings.Cut(id, "-")
	base, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("entry ID %q: %w", id, err)
	}
	fields, _ := parts[1].ToArray()
	return base, fields, nil
}

// parseEntry reads a stream entry and checks its batch.
func parseEntry(m *rueidis.RedisMessage) (entry, error) {
	base, fields, err := splitEntry(m)
	if err != nil {
		return entry{}, err
	}
	e := entry{base: base}
	var have bool
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].ToString()
		val, _ := fields[i+1].ToString()
		switch name {
		case "b":
			// The reply's string, read in place: a read hands the batch to
			// its callback only for the call, which never writes to it.
			e.batch, have = wire.Batch(unsafe.Slice(unsafe.StringData(val), len(val))), true
		case "z":
			e.z, _ = strconv.ParseInt(val, 10, 64)
		}
	}
	switch {
	case !have:
		e.bad = "the entry has no batch"
	default:
		if _, err := wire.CheckStoredBatch(e.batch); err != nil {
			e.bad = err.Error()
		} else if e.batch.BaseOffset() != base {
			e.bad = fmt.Sprintf("the batch's base offset %d is not its entry's %d", e.batch.BaseOffset(), base)
		}
	}
	return e, nil
}

// Read calls fn with each visible batch from the one holding offset, until
// about maxBytes were passed (at least one batch) or fn returns false.
// An entry that is not a valid batch is reported (Stats.Corrupt) and
// skipped, as the disk log skips a corrupt range.
func (l *Log) Read(offset int64, maxBytes int, fn func(wire.Batch) bool) error {
	if l.closed.Load() {
		return storage.ErrClosed
	}
	if offset < l.start.Load() {
		return storage.ErrOffsetOutOfRange
	}
	vis := l.visible.Load()
	if offset >= vis {
		return nil
	}
	c := l.s.client
	count := int64(min(max(maxBytes/int(max(l.avg.Load(), 1)), 1)+1, 1024))
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	res := c.DoMulti(ctx,
		c.B().Xrevrange().Key(l.stream).End(strconv.FormatInt(offset, 10)).Start("-").Count(1).Build(),
		c.B().Xrange().Key(l.stream).Start(strconv.FormatInt(offset+1, 10)).End("+").Count(count).Build())
	prev, err := l.entries(res[0])
	if err != nil {
		return err
	}
	next, err := l.entries(res[1])
	if err != nil {
		return err
	}
	if !l.holds(prev, offset) && len(next) > 0 {
		// No batch holds offset, yet later ones are there: retention
		// removed it after the check above (the start moves once Redis
		// answered the trim).
		return storage.ErrOffsetOutOfRange
	}
	sent := 0
	emit := func(list []rueidis.RedisMessage, from int) (bool, int64, error) {
		lastBase := int64(-1)
		for i := from; i < len(list); i++ {
			e, err := parseEntry(&list[i])
			if err != nil {
				return false, lastBase, l.readFailed(err)
			}
			lastBase = e.base
			if e.base >= vis {
				return false, lastBase, nil
			}
			if e.bad != "" {
				to := e.base + 1
				if i+1 < len(list) {
					if n, err := parseEntry(&list[i+1]); err == nil {
						to = n.base
					}
				}
				l.recordCorrupt(storage.Range{From: e.base, To: to}, e.bad)
				continue
			}
			if e.base+int64(e.batch.Count()) <= offset {
				continue // the batch before offset's (a gap follows it)
			}
			sent += len(e.batch)
			if !fn(e.batch) || sent >= maxBytes {
				return false, lastBase, nil
			}
		}
		return true, lastBase, nil
	}
	more, _, err := emit(prev, 0)
	if err != nil || !more {
		return err
	}
	for {
		more, lastBase, err := emit(next, 0)
		if err != nil || !more || int64(len(next)) < count || lastBase < 0 {
			return err
		}
		r := c.Do(ctx, c.B().Xrange().Key(l.stream).Start(strconv.FormatInt(lastBase+1, 10)).End("+").Count(count).Build())
		if next, err = l.entries(r); err != nil {
			return err
		}
	}
}

// holds reports whether offset is in the batch of prev (an XREVRANGE's
// entry at or below it), or in a range reported corrupt or lost, which
// reads skip.
func (l *Log) holds(prev []rueidis.RedisMessage, offset int64) bool {
	if len(prev) > 0 {
		if e, err := parseEntry(&prev[0]); err == nil && (e.bad != "" || offset < e.base+int64(e.batch.Count())) {
			return true
		}
	}
	l.cmu.Lock()
	defer l.cmu.Unlock()
	for _, r := range l.corrupt {
		if offset >= r.From && offset < r.To {
			return true
		}
	}
	return false
}

// entries returns an XRANGE reply's entries, or the read's error.
func (l *Log) entries(r rueidis.RedisResult) ([]rueidis.RedisMessage, error) {
	list, err := r.ToArray()
	if err != nil {
		return nil, l.readFailed(err)
	}
	return list, nil
}

// readFailed counts a failed read and says where.
func (l *Log) readFailed(err error) error {
	l.readErrs.Add(1)
	l.s.failed(err)
	if isNetworkError(err) {
		return l.s.unavailable(err)
	}
	return fmt.Errorf("redis at %s: read %s: %w", l.s.addr, l.stream, err)
}

// recordCorrupt reports a range of offsets whose batches cannot be read,
// once.
func (l *Log) recordCorrupt(r storage.Range, why string) {
	l.cmu.Lock()
	defer l.cmu.Unlock()
	for _, c := range l.corrupt {
		if c == r {
			return
		}
	}
	l.corrupt = append(l.corrupt, r)
	l.s.cfg.Logger.Error("redis log: batches cannot be read; reads skip them", "partition", l.name, "range", r.String(), "why", why)
}

// OffsetForTime returns the first offset of the first batch whose max
// timestamp is at or after ts, or the end offset.
func (l *Log) OffsetForTime(ts int64) (int64, error) {
	start, vis := l.Bounds()
	off, err := l.firstAtOrAfter(ts, start, vis)
	if err != nil {
		return 0, err
	}
	return max(off, l.start.Load()), nil
}

// firstAtOrAfter returns the base offset of the first batch held from
// from and below end whose greatest timestamp is at or after ts, or end. A binary search
// over the running greatest timestamp ("t", in Redis) finds the first
// batch that could be it; the batches before it are all older. That one
// is it unless the running greatest came from a batch retention removed
// (timestamps need not grow with offsets), so the search goes on from
// there by each batch's own ("m"), which in the usual case is at once.
func (l *Log) firstAtOrAfter(ts, from, end int64) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	bound := pad(max(ts, 0))
	off, err := seekScript.Exec(ctx, l.s.client, []string{l.stream}, []string{"t", bound}).AsInt64()
	if err != nil {
		return 0, l.readFailed(err)
	}
	if off >= 0 {
		off = max(off, from)
	}
	c := l.s.client
	for off >= 0 && off < end {
		list, err := l.entries(c.Do(ctx, c.B().Xrange().Key(l.stream).Start(strconv.FormatInt(off, 10)).End("+").
			Count(64).Build()))
		if err != nil {
			return 0, err
		}
		if len(list) == 0 {
			break
		}
		for i := range list {
			base, m, err := entryTime(&list[i])
			if err != nil {
				return 0, l.readFailed(err)
			}
			if base >= end {
				return end, nil
			}
			if m >= bound {
				return base, nil
			}
			off = base + 1
		}
	}
	return end, nil
}

// entryTime reads an entry's base offset and own greatest timestamp
// ("m", zero-padded).
func entryTime(msg *rueidis.RedisMessage) (int64, string, error) {
	base, fields, err := splitEntry(msg)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if name, _ := fields[i].ToString(); name == "m" {
			m, _ := fields[i+1].ToString()
			return base, m, nil
		}
	}
	return base, "", nil
}

// Retain removes the batches older than maxAge (by their greatest
// timestamp) or beyond maxBytes from the end, always keeping the last
// one, and returns how many it removed. It runs in Redis (trimScript),
// so it waits for the network: the broker calls it on the partition's
// remote writer, never on the shard.
func (l *Log) Retain(now time.Time, maxAge time.Duration, maxBytes int64) (int, error) {
	if maxAge <= 0 && maxBytes <= 0 {
		return 0, nil
	}
	// From the start, a batch goes while it begins more than maxBytes
	// from the end or is older than maxAge: the first to stay is the
	// first young batch among those within maxBytes of the end. The last
	// batch stays whatever this finds (trimScript).
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	end := l.written.Load()
	cut := l.start.Load()
	if maxBytes > 0 {
		near, err := seekScript.Exec(ctx, l.s.client, []string{l.stream},
			[]string{"z", pad(max(l.endZ.Load()-maxBytes, 0))}).AsInt64()
		if err != nil {
			return 0, l.readFailed(err)
		}
		if near < 0 {
			near = end
		}
		cut = max(cut, near)
	}
	if maxAge > 0 {
		young, err := l.firstAtOrAfter(now.Add(-maxAge).UnixNano(), cut, end)
		if err != nil {
			return 0, err
		}
		cut = young
	}
	if cut <= l.start.Load() {
		return 0, nil
	}
	out, err := trimScript.Exec(ctx, l.s.client, []string{l.stream}, []string{strconv.FormatInt(cut, 10)}).ToArray()
	if err != nil {
		l.s.failed(err)
		return 0, fmt.Errorf("redis at %s: retention of %s: %w", l.s.addr, l.stream, err)
	}
	l.s.answered()
	if len(out) != 3 {
		return 0, fmt.Errorf("redis at %s: retention of %s: %d values in the reply", l.s.addr, l.stream, len(out))
	}
	removed, _ := out[0].AsInt64()
	first, _ := out[1].AsInt64()
	zs, _ := out[2].ToString()
	if first >= 0 && first > l.start.Load() {
		z, _ := strconv.ParseInt(zs, 10, 64)
		l.startZ.Store(z)
		l.start.Store(first)
	}
	return int(removed), nil
}

// Stats reports the log's size and state, from memory.
func (l *Log) Stats() storage.LogStats {
	start, end := l.Bounds()
	st := storage.LogStats{Start: start, End: end, Bytes: l.endZ.Load() - l.startZ.Load(), Segments: 1,
		ReadErrors: l.readErrs.Load()}
	if why := l.failed.Load(); why != nil {
		st.ReadOnly = *why
	}
	l.cmu.Lock()
	st.Corrupt = append([]storage.Range(nil), l.corrupt...)
	l.cmu.Unlock()
	return st
}

// Close releases the staged batches; the data stays in Redis.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.sq.Drop()
	return nil
}

// Drop closes the log and deletes its keys.
func (l *Log) Drop() error {
	_ = l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), l.s.cfg.Timeout)
	defer cancel()
	err := l.s.client.Do(ctx, l.s.client.B().Unlink().Key(l.stream, l.meta).Build()).Error()
	if err != nil {
		l.s.failed(err)
		return fmt.Errorf("redis at %s: delete %s: %w", l.s.addr, l.stream, err)
	}
	return nil
}
