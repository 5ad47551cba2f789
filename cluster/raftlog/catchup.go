package raftlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Catching up by whole segments
//
// A replica that is far behind its leader (down for a while, or new) does
// not catch up entry by entry, through Raft's appends: the leader tells
// Raft that its log starts later than it does (SetHorizon moves the first
// index Raft is told of up to the catch-up window before what it applied),
// so Raft sends that replica a snapshot instead (Snapshot). The snapshot
// carries no data, only where the leader's log starts and where the
// entries after the snapshot begin (snapData). Before the replica steps it
// into Raft, its host fetches the batches it lacks from the leader, in
// chunks of whole batches as they lie in the leader's segments (ReadRange),
// into a stage: a log beside the partition log (storage.Stager), which
// PrepareInstall opens and Stage fills. Installing the snapshot
// (ApplySnapshot) then cuts the partition log back to where the stage
// starts and adopts the stage's segment files whole, by renaming them.
//
// The partition log itself is not touched until Raft installs the
// snapshot: the entries it holds after its commit index may be ones it
// acknowledged and the leader counted, so they stay until Raft has
// replaced them. Everything fetched is committed (the leader serves only
// what it made visible), so a stage is the same on every replica and
// stays good across leaders and snapshots: a later snapshot only fetches
// what the stage lacks.

// SetHorizon moves the first index Raft is told of (FirstIndex) up to the
// first entry whose batches end less than window bytes before entry
// applied's end: a replica that needs an earlier entry is sent a snapshot, and
// fetches the batches before it whole. It never moves back (Open and
// ApplySnapshot start it at the compaction point), nor past applied+1,
// nor past an entry whose configuration the meta file does not know.
// The host calls it on the leader, whose Raft asks for old entries only
// to send them to a replica that is behind.
func (s *Storage) SetHorizon(applied uint64, window int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	applied = min(applied, s.st.Hard.Commit, s.lastIndex())
	if applied < s.soft || window < 0 {
		return
	}
	k := applied - s.first
	// The first entry whose batches end less than window before entry
	// applied's end: from there, Raft sends entries (none, for window 0).
	floor := s.pos[k] - window
	j := uint64(sort.Search(int(k+1), func(j int) bool { return s.pos[j] > floor }))
	soft := s.first + j
	if soft <= s.soft {
		return
	}
	if s.confsFrom(soft-1) == nil {
		return
	}
	s.soft = soft
}

// Horizon returns the first index Raft is told of (FirstIndex).
func (s *Storage) Horizon() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.soft
}

// ErrCannotStage says the partition log cannot catch up through a stage
// (a log that is not a storage.Stager).
var ErrCannotStage = errors.New("raftlog: the partition log has no stage")

// PrepareInstall says what this replica must fetch before the snapshot
// can be installed: the leader's batches in [next, to), to be given to
// Stage in order. next == to when nothing is (the replica has them, or
// the leader has none before the snapshot): the snapshot can go to Raft.
// It opens the stage and keeps what it already holds when that starts
// where this snapshot needs it to.
func (s *Storage) PrepareInstall(snap raftpb.Snapshot) (next, to int64, err error) {
	d, err := parseSnap(snap)
	if err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, vis := s.log.Bounds()
	from := max(vis, d.Start)
	to = d.Offset
	if from >= to {
		return to, to, nil
	}
	if s.dirty {
		// The stage starts at the visible end, the commit index: saved
		// (as SaveCommit would), so that after a restart the log shows
		// as much again and the stage is kept, not fetched anew.
		if err := s.save(); err != nil {
			return 0, 0, err
		}
	}
	if s.stage == nil {
		st, ok := s.log.(storage.Stager)
		if !ok {
			return to, to, nil // installs by Reset, as a snapshot past retention does
		}
		stage, err := st.OpenStage()
		if err != nil {
			return 0, 0, fmt.Errorf("raftlog: open stage: %w", err)
		}
		s.stage = stage
	}
	start, end := s.stage.Bounds()
	lstart, _ := s.log.Bounds()
	// A stage that holds from is kept, whatever it holds before: every
	// stage holds committed batches only, the same as this log's and the
	// leader's (install cuts the log back to where the stage starts). But
	// not one that starts before the log does (retention, or a reset,
	// moved the log's start since it was filled): adopted, it would move
	// the log's start back, showing again what was removed.
	if start > from || end < from || start < lstart {
		if err := s.stage.Reset(from); err != nil {
			return 0, 0, fmt.Errorf("raftlog: reset stage at %d: %w", from, err)
		}
		end = from
		s.forgetMarks()
	}
	return min(end, to), to, nil
}

// chunkMark is where a staged chunk starts: its offset, and the bytes
// staged before it.
type chunkMark struct{ off, bytes int64 }

// RecentFrom returns, after a snapshot was installed with a stage, the
// offset of the first chunk among those that hold about the last window
// bytes of what was fetched; the snapshot's offset when nothing was. The
// host replays them to the partition's OnBatch (the idempotent
// producers' table), since a replica hears of no batch it fetched.
func (s *Storage) RecentFrom(window int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	to := s.st.Compacted.Offset
	n := len(s.marks)
	if n == 0 {
		return to
	}
	from := s.marks[n-1].off // the last chunk at least
	for i := n - 2; i >= 0 && s.staged-s.marks[i].bytes <= window; i-- {
		from = s.marks[i].off
	}
	return min(from, to)
}

// Stage writes a chunk of the leader's batches (ReadRange's) to the stage
// at offset at, which must be the stage's end, and returns the new end.
// Each batch is checked (wire.CheckStoredBatch) and must follow the one
// before: a damaged or misplaced chunk is refused whole.
func (s *Storage) Stage(at int64, chunk []byte) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stage == nil {
		return 0, fmt.Errorf("raftlog: no stage open")
	}
	if _, end := s.stage.Bounds(); end != at {
		return 0, fmt.Errorf("raftlog: chunk at %d, the stage ends at %d", at, end)
	}
	next := at
	for rest := chunk; len(rest) > 0; {
		n := wire.BatchSize(rest)
		if n <= 0 || n > len(rest) {
			return 0, fmt.Errorf("%w: chunk at %d: a torn batch at %d", ErrMismatch, at, next)
		}
		b := wire.Batch(rest[:n])
		if _, err := wire.CheckStoredBatch(b); err != nil {
			return 0, fmt.Errorf("%w: chunk at %d: batch at %d: %w", ErrMismatch, at, next, err)
		}
		if b.BaseOffset() != next {
			return 0, fmt.Errorf("%w: chunk at %d: batch at %d, expected %d", ErrMismatch, at, b.BaseOffset(), next)
		}
		next += int64(b.Count())
		rest = rest[n:]
	}
	staged, _ := s.stage.(storage.Staged)
	buf := storage.NewBuf(len(chunk))
	copy(buf.B, chunk)
	defer buf.Release()
	for rest := buf.B; len(rest) > 0; {
		n := wire.BatchSize(rest)
		var err error
		if staged != nil {
			err = staged.Stage(buf, wire.Batch(rest[:n]))
		} else {
			err = s.stage.Append(buf, wire.Batch(rest[:n]))
		}
		if err != nil {
			return 0, s.abandonStage(fmt.Errorf("raftlog: stage at %d: %w", at, err))
		}
		rest = rest[n:]
	}
	if staged != nil {
		if _, err := staged.WritePending(); err != nil {
			staged.Resume()
			return 0, s.abandonStage(fmt.Errorf("raftlog: stage at %d: %w", at, err))
		}
	}
	s.stage.SetVisible(next)
	s.marks = append(s.marks, chunkMark{off: at, bytes: s.staged})
	s.staged += int64(len(chunk))
	s.unsynced += int64(len(chunk))
	if s.unsynced >= stageSyncBytes {
		// Synced as it fills, so that the sync before the install (on the
		// host's goroutine, which every group of the node shares) is short.
		if _, err := s.stage.Sync(); err != nil {
			return 0, s.abandonStage(fmt.Errorf("raftlog: sync the stage: %w", err))
		}
		s.unsynced = 0
	}
	return next, nil
}

// stageSyncBytes is how much Stage writes between two syncs of the stage.
const stageSyncBytes = 32 << 20

// abandonStage drops a stage a write failed, and returns err: the next
// PrepareInstall opens a new one.
func (s *Storage) abandonStage(err error) error {
	if st, ok := s.log.(storage.Stager); ok {
		err = errors.Join(err, st.DropStage())
	}
	s.stage = nil
	s.forgetMarks()
	return err
}

// ErrBeforeStart is ReadRange's answer for an offset before the log's
// start (retention removed it).
var ErrBeforeStart = errors.New("raftlog: offset before the log's start")

// ReadRange returns the committed batches of [from, to) from the leader's
// log, whole and in order, about maxBytes of them (at least one): a chunk
// for a replica's Stage, and the offset after it (from when it is empty).
// It fails with ErrBeforeStart when from is before the log's start.
func (s *Storage) ReadRange(from, to int64, maxBytes int) (chunk []byte, end int64, err error) {
	end = from
	err = s.log.Read(from, maxBytes, func(b wire.Batch) bool {
		if b.BaseOffset() < from {
			return true // the read starts with the batch that holds from
		}
		if b.BaseOffset()+int64(b.Count()) > to || len(chunk) > 0 && len(chunk)+len(b) > maxBytes {
			return false
		}
		chunk = append(chunk, b...)
		end = b.BaseOffset() + int64(b.Count())
		return true
	})
	if errors.Is(err, storage.ErrOffsetOutOfRange) {
		return nil, from, fmt.Errorf("%w: %w", ErrBeforeStart, err)
	}
	if err != nil {
		return nil, from, err
	}
	return chunk, end, nil
}

// install makes the partition log end at the compaction point's offset
// (ApplySnapshot moved it there), holding the leader's batches before it
// as far as it can: what it held up to its visible end (committed, so
// the leader's too), then the stage when that continues them and reaches
// the point; otherwise the log starts again, empty, at the point.
func (s *Storage) install() error {
	to := s.st.Compacted.Offset
	lstart, vis := s.log.Bounds()
	stage := s.stage
	s.stage = nil
	stager, _ := s.log.(storage.Stager)
	if stage != nil {
		sstart, send := stage.Bounds()
		// (A stage that starts before the log does, whose start retention
		// moved during the fetch, is not adopted: the log's start never
		// goes back.)
		if send >= to && sstart <= to && sstart < send && sstart >= lstart {
			return s.adopt(stager, stage, lstart, vis, to)
		}
	}
	s.forgetMarks()
	if stager != nil {
		if err := stager.DropStage(); err != nil {
			return err
		}
	}
	return s.endAt(to, lstart, vis)
}

// endAt makes the log end at offset at: cut back there when it holds the
// leader's batches up to it (from lstart to keep), started again there,
// empty, otherwise.
func (s *Storage) endAt(at, lstart, keep int64) error {
	if lstart <= at && at <= keep {
		s.log.SetVisible(at)
		return s.log.Truncate(at)
	}
	return s.log.Reset(at)
}

// forgetMarks forgets the chunks staged (RecentFrom).
func (s *Storage) forgetMarks() { s.marks, s.staged, s.unsynced = nil, 0, 0 }

// adopt cuts the log back to where the stage starts (or starts it again
// there, when its batches do not reach the stage), cuts the stage at to,
// and adopts it. vis is the log's visible end: it holds the leader's
// batches up to there.
func (s *Storage) adopt(stager storage.Stager, stage storage.Stage, lstart, vis, to int64) error {
	sstart, send := stage.Bounds()
	if err := s.endAt(sstart, lstart, vis); err != nil {
		return err
	}
	// From here on the log holds only the leader's batches, and a crash
	// finishes the job from where the log ends.
	s.st.Keep, s.st.Cut = sstart, true
	if err := s.save(); err != nil {
		return err
	}
	if send > to {
		stage.SetVisible(to)
		if err := stage.Truncate(to); err != nil {
			return err
		}
	}
	if err := stager.Adopt(stage); err != nil {
		return err
	}
	return stager.DropStage()
}

// finishInstall finishes, at Open, an installation a crash interrupted
// (Resetting): the stage, if what is left of it reaches the compaction
// point, is adopted after the log is cut back to its start (the log holds
// the leader's batches up to Keep, or up to the stage's start when some
// of its segments were adopted already); then the log ends at the point,
// or starts again there.
func (s *Storage) finishInstall() error {
	to := s.st.Compacted.Offset
	lstart, lend := s.log.Bounds()
	keep := min(s.st.Keep, lend)
	if s.st.Cut {
		keep = lend // cut at Keep, and continued by the stage's first segments
	}
	if stager, ok := s.log.(storage.Stager); ok {
		stage, err := stager.OpenStage()
		if err != nil {
			return err
		}
		sstart, send := stage.Bounds()
		if send >= to && sstart <= to && sstart < send {
			return s.adopt(stager, stage, lstart, keep, to)
		}
		if err := stager.DropStage(); err != nil {
			return err
		}
	}
	return s.endAt(to, lstart, keep)
}

// parseSnap returns a snapshot's data.
func parseSnap(snap raftpb.Snapshot) (snapData, error) {
	var d snapData
	if err := json.Unmarshal(snap.Data, &d); err != nil || d.Offset < 0 || d.Start > d.Offset || d.Start < 0 {
		return d, fmt.Errorf("raftlog: snapshot at index %d: bad data %q", snap.Metadata.Index, snap.Data)
	}
	return d, nil
}
