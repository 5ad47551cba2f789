package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// StageDir is the name of a disk log's stage directory, beside its segments.
// Segment recovery ignores it (segment names are parsed from file names),
// and Drop removes it with the log.
const StageDir = "catchup"

// Stage is a log that another log can adopt: batches written to it with their
// own base offsets already stamped (Append, or Stage+WritePending on a DiskLog).
type Stage interface {
	Log
	Truncater
	// Reset empties the stage and starts it again at offset start.
	Reset(start int64) error
}

// Stager is a log that catches up in bulk through a stage log: a replica far
// behind its Raft leader (cluster/raftlog) fetches the leader's committed
// batches into the stage, beside its own log, whose uncommitted tail must
// stay until the snapshot is installed; then it cuts its log back to the
// stage's start (Truncate or Reset) and adopts the stage whole.
type Stager interface {
	// OpenStage opens (creating if needed) the log's stage; a stage left by an
	// earlier run is recovered with what it holds. A new stage is empty and
	// starts at offset 0; the caller Resets it to where it must start.
	// Calling it again while a stage is open returns the same one.
	OpenStage() (Stage, error)
	// Adopt makes stage's batches the continuation of this log: the stage must
	// start at this log's written end (else an error and nothing changes); its
	// batches are made durable, and then become this log's (the stage is left
	// empty or gone, closed). The log's visible end does not move (the caller
	// sets it). Durable when it returns.
	Adopt(stage Stage) error
	// DropStage removes the stage and everything in it (closing it if open);
	// no error when there is none.
	DropStage() error
}

var (
	_ Stager = (*DiskLog)(nil)
	_ Stager = (*MemLog)(nil)
	_ Stage  = (*DiskLog)(nil)
	_ Stage  = (*MemLog)(nil)
)

// ErrStageMismatch is the error of an Adopt of a stage that is not the log's
// open stage, or that does not start at the log's end, or whose batches do
// not follow each other (a gap, corrupt ranges).
var ErrStageMismatch = errors.New("storage: stage does not continue the log")

// stageDir is the directory of the log's stage.
func (l *DiskLog) stageDir() string { return l.cfg.Dir + "/" + StageDir }

// OpenStage opens the log's stage, a DiskLog in StageDir with the log's
// configuration otherwise (file system, segment size, keys, file cache). A
// stage that an interrupted Adopt left is first rid of the segments already
// moved into this log (see settleStage), so that it starts at this log's
// end, and Adopt finishes the job, or is empty when everything was moved.
// A failed or closed log opens no stage.
func (l *DiskLog) OpenStage() (Stage, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.checkWritable(); err != nil {
		return nil, err
	}
	if l.stageOf != nil {
		return nil, errors.New("storage: a stage has no stage of its own")
	}
	if l.stage != nil && !l.stage.closed.Load() {
		return l.stage, nil
	}
	l.stage = nil
	if err := l.settleStage(); err != nil {
		return nil, fmt.Errorf("storage: recover the stage: %w", err)
	}
	cfg := l.cfg
	cfg.Dir = l.stageDir()
	st, _, err := OpenDiskLog(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: open the stage: %w", err)
	}
	st.stageOf = l
	l.stage = st
	return st, nil
}

// checkWritable refuses a failed or closed log.
func (l *DiskLog) checkWritable() error {
	if l.failed.Load() {
		return l.failedErr()
	}
	if l.closed.Load() {
		return ErrClosed
	}
	return nil
}

// settleStage removes from the stage directory the segments an interrupted
// Adopt moved into this log but whose removal from the stage was not
// durable: a moved file is briefly under both names, since the log's
// directory is synced before the stage's (else a crash could lose it from
// both). Such a segment is below this log's end, and this log holds a
// segment file of the same name and size (the same file). An index file
// whose segment is gone goes too. The caller holds wmu.
func (l *DiskLog) settleStage() error {
	dir := l.stageDir()
	entries, err := l.cfg.FS.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	logs := map[int64]bool{}
	for _, e := range entries {
		if base, ok := parseSegmentName(e.Name()); ok {
			logs[base] = true
		}
	}
	removed := false
	for base := range logs {
		moved, err := l.holdsMoved(base)
		if err != nil {
			return err
		}
		if !moved {
			continue
		}
		if err := l.cfg.FS.Remove(dir + "/" + segmentName(base, logSuffix)); err != nil {
			return err
		}
		delete(logs, base)
		removed = true
	}
	for _, e := range entries {
		base, ok := parseIndexName(e.Name())
		if !ok || logs[base] {
			continue
		}
		if err := l.cfg.FS.Remove(dir + "/" + e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		return l.cfg.FS.SyncDir(dir)
	}
	return nil
}

// holdsMoved reports whether the stage's segment at base is one this log
// already holds (see settleStage).
func (l *DiskLog) holdsMoved(base int64) (bool, error) {
	if base >= l.written.Load() {
		return false, nil
	}
	if !slices.ContainsFunc(*l.segs.Load(), func(s *segment) bool { return s.base == base }) {
		return false, nil
	}
	name := segmentName(base, logSuffix)
	mine, err := l.cfg.FS.Stat(l.cfg.Dir + "/" + name)
	if err != nil {
		return false, err
	}
	staged, err := l.cfg.FS.Stat(l.stageDir() + "/" + name)
	if err != nil {
		return false, err
	}
	return mine.Size() == staged.Size(), nil
}

// parseIndexName returns the base offset of an .index file name.
func parseIndexName(name string) (int64, bool) {
	s, ok := strings.CutSuffix(name, indexSuffix)
	if !ok {
		return 0, false
	}
	return parseSegmentName(s + logSuffix)
}

// Adopt makes the stage's segments this log's, by renaming their files, so
// that installing a large stage costs a few file operations per segment,
// not a copy of its bytes. It is called by the log's writer only (like
// Truncate); batches staged in this log and not yet written are dropped.
//
// The steps, each leaving files that OpenDiskLog and OpenStage read back as
// this log up to the stage's start, followed by the stage's batches, each
// once, whether in this log or still in the stage:
//
//  1. the stage is closed cleanly: synced, its active segment sealed and
//     every index file written;
//  2. this log is synced, and its active segment, if it holds batches,
//     sealed as a roll seals it (padding cut, index written); if it is
//     empty, it is the stage's first segment's name, and the rename
//     replaces it (atomically: removing it first would leave a log that
//     reopens empty at offset 0 when it was the only segment);
//  3. each stage segment in base order is renamed into this log's
//     directory with its index, this directory is synced, then the
//     stage's: the file is under one durable name or both, never none,
//     and OpenStage removes the stage's name when both survive;
//  4. the stage's directory is removed.
//
// The adopted segments are then recovered as open recovers them (their
// indexes trusted), the last becomes the active segment, and readers see
// them once the caller moves the visible end.
//
// A stage that holds no batches and starts at this log's end is just
// dropped. An error before step 2 (a stage that is not this log's open stage, or
// does not start at its end, or holds corrupt ranges; a failed sync or
// close of the stage) leaves this log as it was; the stage may be closed,
// and OpenStage recovers it. An error from step 2 on fails the log
// (ErrFailed): after a restart, OpenStage and Adopt finish the job.
func (l *DiskLog) Adopt(stage Stage) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	st, segs, err := l.checkAdopt(stage)
	if err != nil || st == nil {
		return err
	}
	l.stage = nil
	if err := st.Close(); err != nil {
		return fmt.Errorf("storage: adopt: close the stage: %w", err)
	}
	l.dropStaged()
	if err := l.adopt(segs); err != nil {
		l.fail("adopt failed: " + err.Error())
		l.cfg.Logger.Error("storage: adopt failed; log read-only until restart", "dir", l.cfg.Dir, "err", err)
		return fmt.Errorf("%w: adopt: %w", ErrFailed, err)
	}
	return nil
}

// checkAdopt vets an Adopt of stage and returns it with its segments; a
// nil stage when it holds no batches and was dropped. The caller holds wmu.
func (l *DiskLog) checkAdopt(stage Stage) (*DiskLog, []*segment, error) {
	if err := l.checkWritable(); err != nil {
		return nil, nil, err
	}
	st, ok := stage.(*DiskLog)
	if !ok || st == nil || st != l.stage || st.stageOf != l {
		return nil, nil, fmt.Errorf("%w: not this log's open stage", ErrStageMismatch)
	}
	if st.closed.Load() {
		l.stage = nil
		return nil, nil, fmt.Errorf("storage: adopt: the stage: %w", ErrClosed)
	}
	if st.failed.Load() {
		return nil, nil, fmt.Errorf("storage: adopt: the stage: %w", st.failedErr())
	}
	start, end := st.start.Load(), l.written.Load()
	if start != end {
		return nil, nil, fmt.Errorf("%w: the stage starts at %d, the log ends at %d", ErrStageMismatch, start, end)
	}
	if c := st.Stats().Corrupt; len(c) > 0 {
		return nil, nil, fmt.Errorf("%w: the stage holds corrupt ranges %v", ErrStageMismatch, c)
	}
	if st.written.Load() == start {
		return nil, nil, l.dropStageLocked()
	}
	return st, *st.segs.Load(), nil
}

// adopt moves the closed stage's segments, segs, into this log (steps 2 to
// 4 of Adopt) and makes them its own. The caller holds wmu.
func (l *DiskLog) adopt(segs []*segment) error {
	if _, err := l.syncLocked(); err != nil {
		return err
	}
	old := l.active
	replace := old.size.Load() == 0
	if replace && old.base != segs[0].base {
		return fmt.Errorf("%w: empty active segment at %d, stage at %d", ErrStageMismatch, old.base, segs[0].base)
	}
	if !replace {
		if err := l.sealForAdopt(old); err != nil {
			return err
		}
	}
	if err := l.moveStaged(segs); err != nil {
		return err
	}
	news, err := l.recoverAdopted(segs)
	if err != nil {
		return err
	}
	if err := l.cfg.FS.RemoveAll(l.stageDir()); err != nil {
		l.releaseAll(news)
		return err
	}
	if err := l.cfg.FS.SyncDir(l.cfg.Dir); err != nil {
		l.releaseAll(news)
		return err
	}
	l.publishAdopted(old, replace, news)
	return nil
}

// sealForAdopt seals the active segment s, durably, as roll does before
// the next segment: the adopted ones follow it.
func (l *DiskLog) sealForAdopt(s *segment) error {
	if err := l.seal(s); err != nil {
		return err
	}
	if err := s.writeIndex(l.cfg.FS, true); err != nil {
		return err
	}
	_, err := l.syncLocked() // the cut padding
	return err
}

// moveStaged renames the stage's segment files, and their indexes, into
// this log's directory, in base order, each rename durable in this
// directory and then out of the stage's before the next.
func (l *DiskLog) moveStaged(segs []*segment) error {
	from, to := l.stageDir(), l.cfg.Dir
	for _, s := range segs {
		name := segmentName(s.base, logSuffix)
		if err := l.cfg.FS.Rename(from+"/"+name, to+"/"+name); err != nil {
			return err
		}
		idx := segmentName(s.base, indexSuffix)
		if err := l.cfg.FS.Rename(from+"/"+idx, to+"/"+idx); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := l.cfg.FS.SyncDir(to); err != nil {
			return err
		}
		if err := l.cfg.FS.SyncDir(from); err != nil {
			return err
		}
	}
	return nil
}

// recoverAdopted builds this log's segments for the moved files as open
// does (each index trusted, written at the stage's clean close, or the
// segment scanned), checks that they follow each other, and starts the
// last one's direct appends.
func (l *DiskLog) recoverAdopted(segs []*segment) ([]*segment, error) {
	rec := Recovery{Clean: true}
	news := make([]*segment, 0, len(segs))
	next := l.written.Load()
	for i, s := range segs {
		last := i == len(segs)-1
		ns := l.newSegment(s.base, l.cfg.Dir+"/"+segmentName(s.base, logSuffix), nil, 0, last)
		news = append(news, ns)
		if err := l.recoverSegment(ns, last, &rec); err != nil {
			l.releaseAll(news)
			return nil, fmt.Errorf("recover %s: %w", ns.path, err)
		}
		if ns.base != next || len(rec.Corrupt) > 0 {
			l.releaseAll(news)
			return nil, fmt.Errorf("%w: adopted segment %s starts at %d, after %d (corrupt: %v)",
				ErrStageMismatch, ns.path, ns.base, next, rec.Corrupt)
		}
		next = ns.next.Load()
	}
	if err := l.startDirect(news[len(news)-1]); err != nil {
		l.releaseAll(news)
		return nil, err
	}
	return news, nil
}

// releaseAll drops segments this log never published.
func (l *DiskLog) releaseAll(segs []*segment) {
	for _, s := range segs {
		s.removed.Store(true)
		s.release()
	}
}

// publishAdopted makes news the log's last segments, after old (the active
// segment), or in its place when replace. Readers meanwhile see old or the
// new list, both consistent below the visible end, which does not move.
func (l *DiskLog) publishAdopted(old *segment, replace bool, news []*segment) {
	l.segMu.Lock()
	cur := *l.segs.Load() // retention may have dropped some since; never the active one
	if replace {
		cur = cur[:len(cur)-1]
	}
	segs := slices.Concat(cur, news)
	l.segs.Store(&segs)
	l.segMu.Unlock()
	for _, s := range news {
		l.bytes.Add(s.size.Load())
	}
	l.active = news[len(news)-1]
	l.written.Store(l.active.next.Load())
	if replace {
		// Its name is the first adopted segment's now; it held nothing, so
		// no reader reads its file.
		old.tail = nil
		old.removed.Store(true)
		old.release()
	}
}

// DropStage removes the stage directory and everything in it, durably,
// closing the stage if it is open.
func (l *DiskLog) DropStage() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.dropStageLocked()
}

// dropStageLocked is DropStage; the caller holds wmu.
func (l *DiskLog) dropStageLocked() error {
	st := l.stage
	l.stage = nil
	var err error
	if st != nil {
		err = st.Drop()
	} else {
		if _, serr := l.cfg.FS.Stat(l.stageDir()); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		err = l.cfg.FS.RemoveAll(l.stageDir())
	}
	if err != nil {
		return err
	}
	return l.cfg.FS.SyncDir(l.cfg.Dir)
}

// closeStage closes the open stage, if any, leaving it on disk (Close).
func (l *DiskLog) closeStage() error {
	l.wmu.Lock()
	st := l.stage
	l.stage = nil
	l.wmu.Unlock()
	if st == nil || st.closed.Load() {
		return nil
	}
	return st.Close()
}
