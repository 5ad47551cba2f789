package logtest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// minReads is how many reads the reader of caseConcurrentReads makes at
// least, so that the case cannot pass without reading.
const minReads = 300

// caseConcurrentReads appends, syncs, publishes and retains on the test's
// goroutine (the shard's), with a Staged log's writes and syncs on another
// (the shard's syncer), while a reader goroutine reads from random visible
// offsets and looks up times and stats. Every batch it is passed must be
// one appended at that offset, byte for byte, in order, below the visible
// end; a read may find its offset removed by retention meanwhile
// (ErrOffsetOutOfRange), and nothing else may fail.
func caseConcurrentReads(e *env) {
	const batches = 150
	// Every batch is built up front, so that the reader knows them all.
	want := map[int64]wire.Batch{}
	var all [][]rec
	for i, end := 0, e.m.end; i < batches; i++ {
		r := e.recs(1 + i%8)
		b := build(end, r)
		want[end] = b
		all = append(all, r)
		end += int64(b.Count())
	}
	writerDone := make(chan struct{})
	readerDone := make(chan struct{})
	var readerErr error
	go func() {
		defer close(readerDone)
		readerErr = readConcurrently(e.log, want, writerDone)
	}()
	finished := false
	finish := func() {
		if !finished {
			finished = true
			close(writerDone)
			<-readerDone
		}
	}
	defer finish() // when the writer fails

	if _, ok := e.log.(storage.Staged); ok {
		e.writeStagedConcurrently(all)
	} else {
		for i, r := range all {
			e.write(false, r)
			if i%20 == 19 {
				e.retain(e.clock, 0, 3*e.unit())
			}
		}
	}
	finish()
	if readerErr != nil {
		e.fatalf("concurrent reader: %v", readerErr)
	}
	e.checkAll()
}

// readConcurrently is the reader of caseConcurrentReads. It returns the
// first thing it found wrong, once the writer is done and it made
// minReads reads.
func readConcurrently(l storage.Log, want map[int64]wire.Batch, writerDone <-chan struct{}) error {
	rng := rand.New(rand.NewPCG(1, 2))
	for reads := 0; ; {
		select {
		case <-writerDone:
			if reads >= minReads {
				return nil
			}
		default:
		}
		start, end := l.Bounds()
		if end <= start {
			runtime.Gosched() // nothing visible yet
			continue
		}
		reads++
		off := start + rng.Int64N(end-start)
		next := int64(-1)
		var bad error
		err := l.Read(off, rng.IntN(8<<10), func(b wire.Batch) bool {
			base := b.BaseOffset()
			switch w, ok := want[base]; {
			case !ok || !bytes.Equal(b, w):
				bad = fmt.Errorf("Read(%d) passed %s, not the batch appended at %d", off, describe(b), base)
			case next < 0 && (off < base || off >= base+int64(b.Count())):
				bad = fmt.Errorf("Read(%d) began with the batch at %d of %d records", off, base, b.Count())
			case next >= 0 && base != next:
				bad = fmt.Errorf("Read(%d) passed the batch at %d after one ending at %d", off, base, next)
			}
			next = base + int64(b.Count())
			return bad == nil && rng.IntN(4) > 0
		})
		if bad != nil {
			return bad
		}
		if err != nil && !errors.Is(err, storage.ErrOffsetOutOfRange) {
			return fmt.Errorf("Read(%d) of [%d, %d): %w", off, start, end, err)
		}
		if _, now := l.Bounds(); next > now {
			return fmt.Errorf("Read(%d) passed batches up to %d, beyond the visible end %d", off, next, now)
		}
		if reads%8 == 0 {
			ts := t0 + rng.Int64N(int64(time.Duration(len(want))*time.Second))
			got, err := l.OffsetForTime(ts)
			if err != nil {
				return fmt.Errorf("OffsetForTime(%s): %w", fromT0(ts), err)
			}
			if _, now := l.Bounds(); got > now {
				return fmt.Errorf("OffsetForTime(%s) = %d, beyond the visible end %d", fromT0(ts), got, now)
			}
			if st := l.Stats(); st.End < st.Start || st.Bytes < 0 {
				return fmt.Errorf("Stats() = %+v", st)
			}
		}
	}
}

// writeStagedConcurrently stages the batches of all on the test's
// goroutine while a syncer goroutine writes and syncs them, as the shard
// and its syncer do, and publishes what the syncer reports synced; it
// retains every 20 batches, once the syncer has caught up.
func (e *env) writeStagedConcurrently(all [][]rec) {
	e.t.Helper()
	st := e.staged()
	type report struct {
		end int64
		err error
	}
	kick := make(chan struct{}, 1)
	synced := make(chan report, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-kick:
			}
			end, err := st.WritePending()
			if err == nil {
				_, err = st.Sync()
			}
			select {
			case synced <- report{end, err}:
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-done
	}()
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	take := func(r report) {
		e.no(r.err, "the syncer's WritePending and Sync")
		if r.end > e.m.visible {
			e.log.SetVisible(r.end)
			e.m.visible, e.m.synced = r.end, r.end
		}
	}
	catchUp := func() {
		for e.m.visible < e.m.end {
			poke()
			take(<-synced)
		}
	}
	for i, r := range all {
		e.put(r, true)
		poke()
		select {
		case rep := <-synced:
			take(rep)
		default:
		}
		if i%20 == 19 {
			catchUp()
			e.retain(e.clock, 0, 3*e.unit())
		}
	}
	catchUp()
}
