package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The logs actor drives storage.DiskLog: partitions of one fsync=always
// topic on the machine's disk, each through its own vfs.ErrorFS so a
// fault can be aimed at one partition's files, sharing one small
// FileCache so that evictions (and the cache's own fsyncs) happen.
const (
	logParts     = 3
	logFiles     = 4    // the FileCache's budget
	logSegBytes  = 4096 // small segments: rolls, sealing and retention happen often
	logIdxEvery  = 256
	maxStaged    = 24 // batches staged before the actor writes instead
	faultOdds    = 60 // per thousand writes and syncs
	retainMaxAge = int64(300 * time.Millisecond)
)

// logsActor is the storage actor.
type logsActor struct {
	files *storage.FileCache
	parts []*partSim
}

func newLogsActor(w *World) (Actor, error) {
	a := &logsActor{}
	for i := range logParts {
		a.parts = append(a.parts, &partSim{id: i, dir: fmt.Sprintf("data/topics/t/%d", i), m: logModel{part: i}})
	}
	return a, a.open(w)
}

func (a *logsActor) Name() string { return "logs" }

// open opens every partition's log on w.Mem with a new file cache.
func (a *logsActor) open(w *World) error {
	a.files = storage.NewFileCache(logFiles)
	for _, p := range a.parts {
		if err := p.open(w, a.files); err != nil {
			return err
		}
	}
	return nil
}

func (a *logsActor) Step(w *World) error {
	p := a.parts[w.Rand.IntN(len(a.parts))]
	switch r := w.Rand.IntN(100); {
	case r < 40:
		return p.publish(w)
	case r < 60:
		return p.write(w)
	case r < 75:
		return p.sync(w)
	case r < 90:
		return p.read(w)
	case r < 97:
		return p.retain(w)
	default:
		return p.restart(w, a.files)
	}
}

func (a *logsActor) Check(w *World) error {
	for _, p := range a.parts {
		if err := p.check(); err != nil {
			return fmt.Errorf("partition %d: %w", p.id, err)
		}
	}
	return a.checkFiles(w)
}

// checkFiles bounds the open descriptors: the cache's budget, plus what
// it may not close (each log's pinned segments: its active one and
// those sealed since its last sync, a read and a direct handle each).
func (a *logsActor) checkFiles(w *World) error {
	pinned := 0
	for _, p := range a.parts {
		pinned += 2 * (1 + p.log.Stats().Segments + p.removedSinceSync - p.segsAtSync)
	}
	st := a.files.Stats()
	if st.Open > logFiles+pinned {
		return fmt.Errorf("the file cache holds %d files open, over its budget %d and %d pinned", st.Open, logFiles, pinned)
	}
	others := 0
	for name, c := range w.Caches {
		if name != a.Name() {
			others += c.Stats().Open
		}
	}
	if open := w.Mem.OpenFiles(); open > st.Open+others+offsetsFilesOpen+coordFilesOpen {
		return fmt.Errorf("%d files open on the disk, %d of them the file cache's, %d other actors'", open, st.Open, others)
	}
	return nil
}

// Crash reopens every log on the crashed disk and checks what survived.
func (a *logsActor) Crash(w *World) error {
	a.files = storage.NewFileCache(logFiles)
	var errs []error
	for _, p := range a.parts {
		if err := p.recover(w, a.files); err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p.id, err))
		}
	}
	return errors.Join(errs...)
}

// partSim is one partition: its log and the model of what the log must
// hold.
type partSim struct {
	id  int
	dir string
	efs *vfs.ErrorFS
	log *storage.DiskLog
	// corrupt is what the last open reported corrupt.
	corrupt []storage.Range

	m logModel
	// For the descriptor bound: the segments when the log last synced, and
	// those retention removed since.
	segsAtSync, removedSinceSync int
}

func (p *partSim) open(w *World, files *storage.FileCache) error {
	p.efs = vfs.NewErrors(w.Mem)
	l, rec, err := storage.OpenDiskLog(storage.DiskConfig{FS: p.efs, Dir: p.dir, SegmentBytes: logSegBytes,
		IndexInterval: logIdxEvery, Files: files, Logger: w.Log,
		// Rolling by age reads the wall clock (segment.created); a year
		// keeps it from ever happening in a run.
		SegmentAge: 365 * 24 * time.Hour})
	if err != nil {
		return err
	}
	p.log, p.corrupt = l, rec.Corrupt
	p.segsAtSync, p.removedSinceSync = l.Stats().Segments, 0
	return nil
}

// publish stages a batch of new records.
func (p *partSim) publish(w *World) error {
	if p.m.nstaged >= maxStaged {
		return p.write(w)
	}
	b := p.m.newBatch(w)
	err := p.log.Stage(nil, b.encode(p.id))
	w.Tracef("logs p%d stage [%d,%d) nonce=%x: %v", p.id, b.base, b.end(), b.nonce, err)
	switch {
	case err == nil && p.m.failed:
		return fmt.Errorf("stage: accepted a batch after the log failed")
	case err == nil:
		p.m.stage(b)
	case !p.m.failed:
		return fmt.Errorf("stage: failed on a log that has not failed: %w", err)
	}
	return nil
}

// write writes what is staged, maybe with a fault injected.
func (p *partSim) write(w *World) error {
	fault := p.injectWriteFault(w)
	end, err := p.log.WritePending()
	p.efs.Clear()
	w.Tracef("logs p%d write fault=%s: end=%d %v", p.id, fault, end, err)
	if end < p.m.written || end > p.m.stagedEnd() {
		return fmt.Errorf("write: reports end %d outside [written %d, staged %d]", end, p.m.written, p.m.stagedEnd())
	}
	if err == nil {
		if want := p.m.writeEnd(); end != want {
			return fmt.Errorf("write: succeeded up to %d, the model wants %d", end, want)
		}
		p.m.wrote(end)
		return nil
	}
	if fault == "" && !p.m.failed && !errors.Is(err, storage.ErrFailed) {
		return fmt.Errorf("write: failed with no fault injected: %w", err)
	}
	var uncut *storage.UncutError
	if errors.As(err, &uncut) {
		p.m.uncut(end, uncut.End)
		return nil
	}
	p.m.writeFailed(end, errors.Is(err, storage.ErrFailed))
	p.log.Resume()
	return nil
}

// injectWriteFault arms, now and then, a fault for the next write: the
// disk full, a short write, and either with the cut that follows failing.
func (p *partSim) injectWriteFault(w *World) string {
	if w.Rand.IntN(1000) >= faultOdds {
		return ""
	}
	after := w.Rand.IntN(3)
	var fault string
	if w.Rand.IntN(2) == 0 {
		p.efs.InjectWrite(nil, syscall.ENOSPC, after)
		fault = fmt.Sprintf("enospc@%d", after)
	} else {
		p.efs.ShortWrite(nil, w.Rand.IntN(600), after)
		fault = fmt.Sprintf("short@%d", after)
	}
	if w.Rand.IntN(4) == 0 {
		p.efs.Inject(vfs.OpTruncate, nil, syscall.EIO, 0)
		fault += "+truncate"
	}
	return fault
}

// sync syncs the log, maybe with a failing fsync, and acks what it
// covered.
func (p *partSim) sync(w *World) error {
	fault := ""
	if w.Rand.IntN(1000) < faultOdds {
		after := w.Rand.IntN(3)
		p.efs.InjectSync(nil, syscall.EIO, after)
		fault = fmt.Sprintf("eio@%d", after)
	}
	end, err := p.log.Sync()
	p.efs.Clear()
	w.Tracef("logs p%d sync fault=%s: end=%d %v", p.id, fault, end, err)
	if err != nil {
		if fault == "" && !p.m.failed && !errors.Is(err, storage.ErrFailed) {
			return fmt.Errorf("sync: failed with no fault injected: %w", err)
		}
		p.m.failed = true
		return nil
	}
	if p.m.failed {
		return fmt.Errorf("sync: reported end %d durable after the log failed: nothing it covers may be acked", end)
	}
	if end != p.m.written {
		return fmt.Errorf("sync: made %d durable, the log wrote up to %d", end, p.m.written)
	}
	p.log.SetVisible(end)
	p.m.synced(end, p.log.Stats().Start)
	p.segsAtSync, p.removedSinceSync = p.log.Stats().Segments, 0
	return nil
}

// read reads from a random visible offset and checks every record.
func (p *partSim) read(w *World) error {
	start, end := p.log.Bounds()
	// Below the start, a read fails; but one at or past the visible end
	// reads nothing first, which matters when start > end (see retain).
	if below := min(start, end); below > 0 && w.Rand.IntN(10) == 0 {
		from := w.Rand.Int64N(below)
		err := p.log.Read(from, 1, func(wire.Batch) bool { return true })
		w.Tracef("logs p%d read %d below start %d: %v", p.id, from, start, err)
		if !errors.Is(err, storage.ErrOffsetOutOfRange) {
			return fmt.Errorf("a read at %d below the start %d: %w, want ErrOffsetOutOfRange", from, start, err)
		}
		return nil
	}
	if start >= end {
		// start > end: retention removed sealed segments written but not
		// yet synced, so never visible (see retain).
		w.Tracef("logs p%d read: empty [%d,%d)", p.id, start, end)
		return nil
	}
	from := start + w.Rand.Int64N(end-start)
	n, err := p.m.verify(p.log, from, 1+w.Rand.IntN(3*logSegBytes))
	w.Tracef("logs p%d read %d: %d records %v", p.id, from, n, err)
	return err
}

// retain runs retention at the simulated time, by age and by size. It
// may remove sealed segments whose batches were written but not yet
// synced, so never visible (nor acked): Bounds then reports a start past
// the visible end until a sync catches up. Retention removes only from
// the start, so that is allowed here; the broker's syncer keeps the gap
// to a few milliseconds, far below any retention.
func (p *partSim) retain(w *World) error {
	maxAge := time.Duration(w.Rand.Int64N(retainMaxAge))
	maxBytes := int64(0)
	if w.Rand.IntN(2) == 0 {
		maxBytes = w.Rand.Int64N(6 * logSegBytes)
	}
	before, _ := p.log.Bounds()
	n, err := p.log.Retain(w.Time(), maxAge, maxBytes)
	start, _ := p.log.Bounds()
	w.Tracef("logs p%d retain age=%v bytes=%d: removed %d segments, start %d->%d %v", p.id, maxAge, maxBytes, n, before, start, err)
	if err != nil {
		return fmt.Errorf("retain: %w", err)
	}
	p.removedSinceSync += n
	return p.m.retained(start)
}

// restart closes the log cleanly and opens it again, as a broker's
// restart does.
func (p *partSim) restart(w *World, files *storage.FileCache) error {
	failed := p.m.failed
	err := p.log.Close()
	w.Tracef("logs p%d close (failed=%v): %v", p.id, failed, err)
	if err != nil && !failed {
		return fmt.Errorf("close of a log that has not failed: %w", err)
	}
	if err == nil && !failed {
		p.m.synced(p.m.written, p.log.Stats().Start) // Close syncs
	}
	if err := p.open(w, files); err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	if len(p.corrupt) > 0 {
		return fmt.Errorf("reopen: recovery reports corruption %v; the simulator corrupts nothing", p.corrupt)
	}
	if err := p.recovered(w, "reopen"); err != nil {
		return err
	}
	// Opening syncs the directory and, after an unclean shutdown (a failed
	// log closes without syncing), every segment: retention's removals and
	// everything the log recovered are durable now, a failed log's
	// unsynced batches included. The shard gives out offsets from the
	// reopened log's end on that promise (shard.NewPartition).
	start, end := p.log.Bounds()
	p.m.synced(end, start)
	return nil
}

// recover opens the log on the crashed disk.
func (p *partSim) recover(w *World, files *storage.FileCache) error {
	if err := p.open(w, files); err != nil {
		return fmt.Errorf("open after a crash: %w", err)
	}
	// A hole between segments is reported corrupt. The simulator
	// corrupts nothing, but a write that spanned a segment roll and was
	// never made durable may leave the new segment's head on the crashed
	// disk without the old one's tail. Nothing acked may be in it: every
	// fsync that would have covered it failed or never ran.
	for _, r := range p.corrupt {
		if r.From < p.m.acked {
			return fmt.Errorf("recovery reports %v corrupt, below %d, which was acked", r, p.m.acked)
		}
		w.Tracef("logs p%d recover: a hole at %v (a torn write across a segment roll)", p.id, r)
		p.m.dropHole(r.From, r.To)
	}
	if err := p.recovered(w, "recover"); err != nil {
		return err
	}
	// What a crash leaves is durable: the crashed disk is all synced.
	start, end := p.log.Bounds()
	p.m.synced(end, start)
	return nil
}

// recovered checks a reopened log against the model: everything acked
// is there, the offsets are dense from the start, every record is the one
// published, and the model forgets what the log does not hold.
func (p *partSim) recovered(w *World, how string) error {
	start, end := p.log.Bounds()
	w.Tracef("logs p%d %s: [%d,%d) acked=%d durable-start=%d", p.id, how, start, end, p.m.acked, p.m.durableStart)
	if end < p.m.acked {
		return fmt.Errorf("%s: the log ends at %d, but %d was acked: acknowledged messages lost", how, end, p.m.acked)
	}
	if how == "recover" && (start > p.m.start || start < p.m.durableStart) {
		return fmt.Errorf("%s: the log starts at %d, outside [%d, %d]: between where retention's removals were durable and where it had removed up to",
			how, start, p.m.durableStart, p.m.start)
	}
	if how == "reopen" && start != p.m.start {
		return fmt.Errorf("%s: the log starts at %d, it started at %d before the restart", how, start, p.m.start)
	}
	if err := p.m.reopened(start, end); err != nil {
		return fmt.Errorf("%s: %w", how, err)
	}
	if n, err := p.m.verifyAll(p.log); err != nil {
		return fmt.Errorf("%s: after %d records: %w", how, n, err)
	}
	return nil
}

// check compares the log's bounds and state with the model.
func (p *partSim) check() error {
	start, end := p.log.Bounds()
	if start != p.m.start || end != p.m.visible {
		return fmt.Errorf("bounds [%d,%d), the model has [%d,%d)", start, end, p.m.start, p.m.visible)
	}
	if p.log.Failed() != p.m.failed {
		return fmt.Errorf("the log's failed state is %v, the model's %v", p.log.Failed(), p.m.failed)
	}
	return nil
}

// randomPadding is how many filler bytes a record value gets, so batches
// vary in size and segments fill at different records.
func randomPadding(r *rand.Rand) int { return r.IntN(48) }
