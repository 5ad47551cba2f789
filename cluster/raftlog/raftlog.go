// Package raftlog is the Raft log of a replicated partition, kept in the
// partition's own segment log: one Raft entry per record batch, so every
// message is on disk once, as Redpanda keeps it. It implements
// go.etcd.io/raft/v3's Storage over a storage log that can cut its tail.
//
// # What is where
//
// A Raft entry is one of two kinds:
//
//   - a batch entry: its data is a record batch. It is stored as that
//     batch in the partition log, stamped with the log's end offset as its
//     base (the same on every replica, since their logs match up to it),
//     and takes the batch's offsets. The entry's data keeps whatever base
//     offset it came with; Entries serves the stored, stamped copy once
//     the batch is committed.
//   - a control entry: the empty entry a new leader appends, or a
//     configuration change. It takes no offset and is not in the partition
//     log: readers and subscribers never see it.
//
// Raft also needs each entry's term, its hard state (term, vote, commit)
// and the configuration. These live in a small meta file (metaState) that
// holds the first term of each run of entries (term starts, as Kafka's
// leader-epoch checkpoint keeps the first offset of each epoch), every
// control entry with the offset it sits at, the hard state, the conf state
// and the compaction point. The meta file changes only on elections,
// configuration changes and truncations, and is rewritten whole, atomically
// and durably, each time: every term starts with its leader's empty entry,
// so a batch entry never needs a meta write.
//
// The index of an entry is not stored anywhere: Open derives it from the
// meta file and the partition log's batches, in order, placing each control
// entry before the batch at its offset (see derive). A crash between the
// writes of a truncation or an append leaves meta records the log no longer
// backs; derive drops them.
//
// # Visibility
//
// The partition log's visible end is the offset after the last committed
// batch entry: readers and subscribers see only what a quorum holds. Open
// sets it from the commit index in the meta file, which is written lazily
// (with other meta changes); after a restart a follower shows less until
// its leader tells it the commit index again, never more.
package raftlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Log is the partition log under a Raft log: a storage log whose tail can be
// cut off (storage.Truncater), whose retention can be bounded, and that can
// start again at any offset.
type Log interface {
	storage.Log
	// Truncate removes every batch at or after offset end, durably.
	Truncate(end int64) error
	// RetainBelow applies retention as Retain does, to what ends at or
	// below offset below only, calling before with the new start first
	// (storage.DiskLog.RetainBelow).
	RetainBelow(now time.Time, maxAge time.Duration, maxBytes int64, below int64,
		before func(start int64) error) (int, error)
	// Reset empties the log and starts it again at offset start, durably
	// (storage.DiskLog.Reset).
	Reset(start int64) error
}

// MetaStore keeps the meta file: Save replaces it atomically (and durably,
// for a durable partition); Load returns nil, nil when there is none.
type MetaStore interface {
	Load() ([]byte, error)
	Save(data []byte) error
}

// ErrMismatch is returned when an entry does not fit the log: data that is
// not a record batch, or a log whose batches do not follow each other.
// Either is a bug or damage, never a normal condition.
var ErrMismatch = errors.New("raftlog: entry does not fit the partition log")

// termStart says that entries from Index on have Term (until the next one).
type termStart struct {
	Term  uint64 `json:"t"`
	Index uint64 `json:"i"`
}

// control is a control entry: its index, type and data, and the offset it
// sits at (the log's end offset when it was appended).
type control struct {
	Index  uint64           `json:"i"`
	Offset int64            `json:"o"`
	Type   raftpb.EntryType `json:"y,omitempty"`
	Data   []byte           `json:"d,omitempty"`
	term   uint64           // filled from term starts
}

// metaState is the meta file's content.
type metaState struct {
	Version int              `json:"v"`
	Hard    raftpb.HardState `json:"hard"`
	Conf    raftpb.ConfState `json:"conf"`
	// ConfIndex is the index of the configuration change entry Conf is
	// the result of (0: the group's first configuration). A replay of the
	// log must not apply the changes up to it again.
	ConfIndex uint64      `json:"conf_index,omitempty"`
	Terms     []termStart `json:"terms,omitempty"`
	Ctl       []control   `json:"ctl,omitempty"`
	// Confs is the configuration after each configuration change applied
	// since the compaction point, and the last one at or before it: what
	// a snapshot at the compaction point must carry. A meta file of
	// version 1 had none; it starts with the saved configuration.
	Confs []confAt `json:"confs,omitempty"`
	// Compacted is the index and term of the entry before the first one
	// held, the offset after it, and the configuration there: the
	// snapshot a replica that needs an earlier entry installs.
	Compacted struct {
		Index  uint64           `json:"i"`
		Term   uint64           `json:"t"`
		Offset int64            `json:"o"`
		Conf   raftpb.ConfState `json:"conf"`
	} `json:"compacted"`
	// Resetting says a snapshot is being installed: the meta file already
	// describes it, and the partition log may still hold the old entries,
	// or only some of the stage's (catchup.go). Open finishes the job: it
	// adopts what is left of the stage, if it continues the log, and ends
	// the log at the compaction point (Log.Reset there if it cannot).
	Resetting bool `json:"resetting,omitempty"`
	// Keep is, while Resetting, the offset up to which the partition log
	// held committed batches (its visible end) when the installation
	// began: the leader's batches, which it may keep. What it held after
	// that may not be the leader's.
	Keep int64 `json:"keep,omitempty"`
	// Cut says the log was cut at Keep for the stage to continue it:
	// everything after Keep came from the stage.
	Cut bool `json:"cut,omitempty"`
}

// confAt is the configuration that applying the change at Index made
// (Index 0: the group's first configuration).
type confAt struct {
	Index uint64           `json:"i"`
	Conf  raftpb.ConfState `json:"c"`
}

// snapData is a snapshot's data: the replica that installs it ends its
// partition log at Offset, where the entries after the snapshot's index
// begin, which the leader sends as entries. The batches before Offset,
// from Start (where the leader's log starts) on, the replica fetches from
// the leader beforehand, whole, into a stage it then adopts (catchup.go);
// it keeps what it has of them already. A snapshot whose Start is Offset
// (the leader's retention removed everything before) starts the log
// again, empty, at Offset.
type snapData struct {
	Offset int64 `json:"ratatoskr_log_start"`
	Start  int64 `json:"start"`
	// Confs is the leader's configuration history from the snapshot's
	// index on (its first entry the configuration there): the snapshot's
	// own ConfState is the last of them, the group's configuration now,
	// so that a replica added after the compaction point is in it (raft
	// restores no snapshot whose configuration lacks the receiver). The
	// configuration changes after the index are not applied again.
	Confs []confAt `json:"confs,omitempty"`
}

const metaVersion = 2

// Storage is a Raft log over a partition log. The Raft loop calls every
// method; the mutex lets metrics and the admin API read it too.
type Storage struct {
	log  Log
	meta MetaStore

	mu    sync.Mutex
	st    metaState
	first uint64  // index of offs[0]
	offs  []int64 // per entry from first: a batch's base offset, or a control entry's offset
	cnts  []int32 // per entry: a batch's record count, 0 for a control entry
	// pos is per entry the bytes of batches up to and including it,
	// counted from any point (derive's): what SetHorizon measures by.
	pos []int64
	// soft is the first index Raft is told of (FirstIndex): first, or
	// later when SetHorizon moved it up so that a replica further behind
	// is sent a snapshot and fetches the batches whole (catchup.go).
	soft  uint64
	stage storage.Stage // the stage being filled for a snapshot, or nil
	// marks are, per chunk staged, its offset and the bytes staged before
	// it; staged is the bytes staged (RecentFrom).
	marks    []chunkMark
	staged   int64
	unsynced int64 // bytes staged since the stage was last synced
	ctl      map[uint64]control
	end      int64 // offset end of the last entry
	dirty    bool  // st has changes not yet saved (commit only)

	// The data of the entries after the last one made visible (Commit),
	// from index tailFirst: the partition log serves only visible batches,
	// and the leader sends uncommitted ones to followers.
	tailFirst uint64
	tail      [][]byte
}

// Open derives the Raft log from the partition log and its meta file, and
// sets the log's visible end to what is committed.
func Open(l Log, meta MetaStore) (*Storage, error) {
	if t, ok := l.(interface{ StopTrimming() }); ok {
		// A memory log's own bound would drop entries Raft has not
		// applied: its retention goes through Retain, as a disk log's.
		t.StopTrimming()
	}
	s := &Storage{log: l, meta: meta, ctl: map[uint64]control{}}
	data, err := meta.Load()
	if err != nil {
		return nil, fmt.Errorf("raftlog: read meta: %w", err)
	}
	if data != nil {
		if err := json.Unmarshal(data, &s.st); err != nil {
			return nil, fmt.Errorf("raftlog: meta file damaged: %w", err)
		}
		if s.st.Version != metaVersion && s.st.Version != 1 {
			return nil, fmt.Errorf("raftlog: meta version %d, want %d", s.st.Version, metaVersion)
		}
	}
	if len(s.st.Confs) == 0 {
		s.st.Confs = []confAt{{Index: s.st.ConfIndex, Conf: s.st.Conf}}
	}
	if _, end := s.log.Bounds(); end < s.st.Compacted.Offset && !s.st.Resetting {
		// The log lost batches at or after the compaction point (a crash
		// of a log that syncs lazily, before this version synced before
		// compacting): what is before the point is not needed, and what
		// is after it the leader sends again, so the log starts there.
		if err := s.log.Reset(s.st.Compacted.Offset); err != nil {
			return nil, fmt.Errorf("raftlog: start the log again at the compaction point: %w", err)
		}
	}
	if s.st.Resetting {
		// A crash interrupted ApplySnapshot after its first save.
		if err := s.finishInstall(); err != nil {
			return nil, fmt.Errorf("raftlog: finish installing a snapshot: %w", err)
		}
		s.st.Resetting, s.st.Keep, s.st.Cut = false, 0, false
		if err := s.save(); err != nil {
			return nil, err
		}
	}
	if err := s.derive(); err != nil {
		return nil, err
	}
	commit := min(s.st.Hard.Commit, s.lastIndex())
	s.log.SetVisible(s.offsetEnd(commit))
	return s, nil
}

// derive rebuilds the entry list from the log's batches and the meta
// file's control entries, and drops meta records the log does not back.
// It keeps the data of the entries after the saved commit index (tail).
func (s *Storage) derive() error {
	start, _ := s.log.Bounds()
	c := s.st.Compacted
	if c.Offset < start {
		return fmt.Errorf("raftlog: partition log starts at %d, after the compaction point %d", start, c.Offset)
	}
	s.first = c.Index + 1
	s.soft = s.first
	s.offs, s.cnts, s.pos, s.tail = nil, nil, nil, nil
	s.end = c.Offset
	commit := s.st.Hard.Commit
	s.tailFirst = max(commit+1, s.first)
	var ctls []control
	ci := 0
	for ci < len(s.st.Ctl) && s.st.Ctl[ci].Index <= c.Index {
		ci++ // at or below the compaction point: gone
	}
	next := s.first
	keep := func(data []byte) {
		if next >= s.tailFirst {
			s.tail = append(s.tail, data)
		}
		next++
	}
	// placeCtl places the control entries that sit at the current end and
	// whose index is the next one; a record that does not fit is not
	// backed by the log (a crash cut the log after it was saved), and
	// neither is any after it.
	placeCtl := func() {
		for ci < len(s.st.Ctl) {
			k := s.st.Ctl[ci]
			if k.Offset != s.end || k.Index != next {
				return
			}
			s.offs = append(s.offs, k.Offset)
			s.cnts = append(s.cnts, 0)
			s.pos = append(s.pos, s.posEnd())
			ctls = append(ctls, k)
			keep(nil)
			ci++
		}
	}
	var bad error
	from := c.Offset
	for {
		progressed := false
		err := s.readAll(from, func(b wire.Batch) bool {
			base := b.BaseOffset()
			if base != s.end {
				bad = fmt.Errorf("%w: batch at %d, expected %d", ErrMismatch, base, s.end)
				return false
			}
			placeCtl()
			s.offs = append(s.offs, base)
			s.cnts = append(s.cnts, int32(b.Count()))
			s.pos = append(s.pos, s.posEnd()+int64(len(b)))
			s.end = base + int64(b.Count())
			if next >= s.tailFirst {
				keep(append([]byte(nil), b...))
			} else {
				keep(nil)
			}
			from = s.end
			progressed = true
			return true
		})
		if err != nil {
			return fmt.Errorf("raftlog: read partition log: %w", err)
		}
		if bad != nil {
			return bad
		}
		if !progressed {
			break
		}
	}
	placeCtl()
	s.tailFirst = min(s.tailFirst, s.lastIndex()+1)
	dropped := ci < len(s.st.Ctl)
	s.st.Ctl = ctls
	last := s.lastIndex()
	var terms []termStart
	for _, t := range s.st.Terms {
		if t.Index <= last {
			terms = append(terms, t)
		} else {
			dropped = true // beyond the last entry: not backed
		}
	}
	s.st.Terms = terms
	for i := range s.st.Ctl {
		k := s.st.Ctl[i]
		k.term = s.termOf(k.Index)
		s.ctl[k.Index] = k
	}
	if dropped {
		return s.save()
	}
	return nil
}

// readAll reads the partition log from offset, in whatever the log holds
// beyond its visible end too: Raft entries are stored before they commit.
func (s *Storage) readAll(from int64, fn func(wire.Batch) bool) error {
	// A freshly opened log shows everything it recovered; Open lowers the
	// visible end to the commit only after deriving.
	_, vis := s.log.Bounds()
	if from >= vis {
		return nil
	}
	err := s.log.Read(from, 4<<20, fn)
	if errors.Is(err, storage.ErrOffsetOutOfRange) {
		return nil
	}
	return err
}

func (s *Storage) lastIndex() uint64 { return s.first + uint64(len(s.offs)) - 1 }

// posEnd returns the bytes of batches up to the last entry (pos).
func (s *Storage) posEnd() int64 {
	if len(s.pos) == 0 {
		return 0
	}
	return s.pos[len(s.pos)-1]
}

// offsetEnd returns the offset after entry i (the compaction point's for
// i below the first entry).
func (s *Storage) offsetEnd(i uint64) int64 {
	if i < s.first || len(s.offs) == 0 {
		return s.st.Compacted.Offset
	}
	k := min(i-s.first, uint64(len(s.offs)-1))
	return s.offs[k] + int64(s.cnts[k])
}

// termOf returns the term of entry i from the term starts.
func (s *Storage) termOf(i uint64) uint64 {
	if i == s.st.Compacted.Index {
		return s.st.Compacted.Term
	}
	n := sort.Search(len(s.st.Terms), func(k int) bool { return s.st.Terms[k].Index > i })
	if n == 0 {
		return s.st.Compacted.Term
	}
	return s.st.Terms[n-1].Term
}

func (s *Storage) save() error {
	s.st.Version = metaVersion
	data, err := json.Marshal(&s.st)
	if err != nil {
		return err
	}
	if err := s.meta.Save(data); err != nil {
		return fmt.Errorf("raftlog: write meta: %w", err)
	}
	s.dirty = false
	return nil
}

// InitialState implements raft.Storage.
func (s *Storage) InitialState() (raftpb.HardState, raftpb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs := s.st.Hard
	hs.Commit = min(hs.Commit, s.lastIndex())
	// A commit index saved with an append may cover a configuration
	// change that was not applied (and its configuration not saved) before
	// a crash: Raft would take it as applied and never hand it out again.
	// Committed is what a quorum holds, so saying less is safe; the
	// leader tells the replica the rest.
	for i, c := range s.ctl {
		conf := c.Type == raftpb.EntryConfChange || c.Type == raftpb.EntryConfChangeV2
		if conf && i > s.st.ConfIndex && i <= hs.Commit {
			hs.Commit = i - 1
		}
	}
	return hs, s.st.Conf, nil
}

// ConfChangeAfter reports whether the log holds a configuration change
// entry after index i.
func (s *Storage) ConfChangeAfter(i uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for j, c := range s.ctl {
		if j > i && (c.Type == raftpb.EntryConfChange || c.Type == raftpb.EntryConfChangeV2) {
			return true
		}
	}
	return false
}

// ConfIndex returns the index of the configuration change entry the saved
// configuration is the result of (0: the group's first configuration).
func (s *Storage) ConfIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.ConfIndex
}

// Entries implements raft.Storage: the entries in [lo, hi), at most about
// maxSize bytes but at least one.
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lo < s.soft {
		return nil, raft.ErrCompacted
	}
	if hi > s.lastIndex()+1 {
		return nil, fmt.Errorf("raftlog: entries [%d, %d) beyond the last index %d", lo, hi, s.lastIndex())
	}
	var out []raftpb.Entry
	var size uint64
	add := func(e raftpb.Entry) bool {
		size += uint64(e.Size())
		if len(out) > 0 && size > maxSize {
			return false
		}
		out = append(out, e)
		return true
	}
	i := lo
	for i < hi {
		k := i - s.first
		if s.cnts[k] == 0 {
			c := s.ctl[i]
			if !add(raftpb.Entry{Term: c.term, Index: i, Type: c.Type, Data: c.Data}) {
				return out, nil
			}
			i++
			continue
		}
		if i >= s.tailFirst {
			if !add(raftpb.Entry{Term: s.termOf(i), Index: i, Type: raftpb.EntryNormal, Data: s.tail[i-s.tailFirst]}) {
				return out, nil
			}
			i++
			continue
		}
		// A run of visible batch entries: read them from the log in one pass.
		var rerr error
		full := false
		err := s.log.Read(s.offs[k], int(min(maxSize, 64<<20)), func(b wire.Batch) bool {
			if i >= hi || i >= s.tailFirst || s.cnts[i-s.first] == 0 {
				return false
			}
			if b.BaseOffset() != s.offs[i-s.first] {
				rerr = fmt.Errorf("%w: entry %d wants offset %d, log has %d", ErrMismatch, i, s.offs[i-s.first], b.BaseOffset())
				return false
			}
			data := make([]byte, len(b))
			copy(data, b)
			if !add(raftpb.Entry{Term: s.termOf(i), Index: i, Type: raftpb.EntryNormal, Data: data}) {
				full = true
				return false
			}
			i++
			return true
		})
		switch {
		case errors.Is(err, storage.ErrOffsetOutOfRange):
			return nil, raft.ErrCompacted
		case err != nil:
			return nil, err
		case rerr != nil:
			return nil, rerr
		case full:
			return out, nil
		case i-s.first == k:
			return nil, raft.ErrUnavailable // the log served nothing
		}
	}
	return out, nil
}

// Term implements raft.Storage.
func (s *Storage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.soft-1 {
		return 0, raft.ErrCompacted
	}
	if i > s.lastIndex() {
		return 0, raft.ErrUnavailable
	}
	return s.termOf(i), nil
}

// LastIndex implements raft.Storage.
func (s *Storage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastIndex(), nil
}

// FirstIndex implements raft.Storage.
func (s *Storage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.soft, nil
}

// Snapshot implements raft.Storage: the snapshot at the entry before the
// first one Raft is told of (FirstIndex), for a replica that needs an
// earlier entry: one that retention removed (the compaction point), or
// one further behind than the leader's catch-up window (SetHorizon). Its
// data says where the replica's log goes on after it and where the
// leader's starts (snapData): a partition's state is its log, whose
// batches the replica fetches whole (catchup.go), and whose entries after
// the snapshot the leader sends as entries.
func (s *Storage) Snapshot() (raftpb.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.Compacted
	i := s.soft - 1
	if i == 0 {
		return raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{ConfState: s.st.Conf}}, nil
	}
	confs := s.confsFrom(i)
	if confs == nil {
		// SetHorizon does not move past the known history; a snapshot at
		// the compaction point always has it.
		return raftpb.Snapshot{}, fmt.Errorf("raftlog: no configuration at index %d", i)
	}
	start, _ := s.log.Bounds()
	d := snapData{Offset: s.offsetEnd(i), Start: min(start, s.offsetEnd(i)), Confs: confs}
	if i == c.Index {
		d.Offset = c.Offset
	}
	data, err := json.Marshal(d)
	if err != nil {
		return raftpb.Snapshot{}, err
	}
	return raftpb.Snapshot{Data: data, Metadata: raftpb.SnapshotMetadata{
		Index: i, Term: s.termOf(i), ConfState: confs[len(confs)-1].Conf}}, nil
}

// confsFrom returns the configuration history from entry i on, its first
// element the configuration at i (with index i), or nil when it is not
// known (a meta file of version 1 knows only the configuration since the
// last change).
func (s *Storage) confsFrom(i uint64) []confAt {
	c := s.st.Compacted
	hist := s.st.Confs
	if c.Index > 0 {
		// The configuration at the compaction point, then what came after.
		hist = append([]confAt{{Index: c.Index, Conf: c.Conf}}, hist...)
	}
	k := sort.Search(len(hist), func(j int) bool { return hist[j].Index > i }) - 1
	if k < 0 {
		return nil
	}
	confs := append([]confAt(nil), hist[k:]...)
	confs[0].Index = i
	return confs
}

// ApplySnapshot installs a snapshot raft accepted (a Ready's Snapshot):
// every entry this replica holds is dropped, with the snapshot's
// configuration, and its partition log ends at the snapshot's offset.
// What it keeps of its batches before that, and what it adopts of the
// stage PrepareInstall and Stage filled, make the leader's log from the
// snapshot's Start (catchup.go); without them it starts again, empty, at
// the snapshot's offset (Log.Reset).
//
// It is crash-safe: the meta file records the snapshot, marked Resetting,
// before the log changes, and Open finishes the job if a crash came
// between (finishInstall).
func (s *Storage) ApplySnapshot(snap raftpb.Snapshot) error {
	d, err := parseSnap(snap)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := snap.Metadata
	if m.Index <= s.st.Compacted.Index {
		return fmt.Errorf("raftlog: snapshot at index %d is not after the compaction point %d", m.Index, s.st.Compacted.Index)
	}
	confs := d.Confs
	if len(confs) == 0 || confs[0].Index != m.Index {
		confs = []confAt{{Index: m.Index, Conf: m.ConfState}}
	}
	last := confs[len(confs)-1]
	st := s.st
	st.Compacted.Index, st.Compacted.Term, st.Compacted.Offset, st.Compacted.Conf = m.Index, m.Term, d.Offset, confs[0].Conf
	st.Conf, st.ConfIndex = last.Conf, last.Index
	st.Confs = confs
	st.Terms, st.Ctl = nil, nil
	st.Hard.Commit = max(st.Hard.Commit, m.Index)
	st.Resetting = true
	_, st.Keep = s.log.Bounds()
	if s.stage != nil {
		// Durable before the meta file says the log is being replaced: a
		// crash from then on finishes the job with it (finishInstall).
		if _, err := s.stage.Sync(); err != nil {
			return fmt.Errorf("raftlog: sync the stage: %w", err)
		}
	}
	s.st = st
	if err := s.save(); err != nil {
		return err
	}
	s.first = m.Index + 1
	s.soft = s.first
	s.offs, s.cnts, s.pos, s.tail = nil, nil, nil, nil
	s.tailFirst = s.first
	clear(s.ctl)
	s.end = d.Offset
	if err := s.install(); err != nil {
		return fmt.Errorf("raftlog: install snapshot at offset %d: %w", d.Offset, err)
	}
	s.log.SetVisible(d.Offset)
	s.st.Resetting, s.st.Keep, s.st.Cut = false, 0, false
	return s.save()
}

// Retain applies retention to the partition log, bounded by what the
// group applied (entry applied and before: nothing Raft may still hand
// out to apply) and by offset floor (nothing at or after it goes), and moves the compaction point to the new start of the
// log, so that a replica that needs an entry it removed gets a snapshot.
// It returns the number of segments removed.
//
// The compaction point must carry the configuration at its index. A
// group whose meta file predates the configuration history (version 1)
// and whose configuration changed has none for the entries before that
// change, nor has a replica that installed a snapshot for those before
// its snapshot: a compaction there is refused (ErrNoConfHistory) and
// nothing is removed, until retention reaches past the change.
func (s *Storage) Retain(now time.Time, maxAge time.Duration, maxBytes int64, applied uint64, floor int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	applied = min(applied, s.st.Hard.Commit, s.lastIndex())
	if applied < s.first {
		return 0, nil
	}
	limit := min(s.offsetEnd(applied), floor)
	// The log is made durable up to its end first, when retention has
	// anything to remove: a group that does not sync each append
	// (fsync=interval or never) could otherwise lose, in a crash, batches
	// at and after a compaction point that was saved. A first pass only
	// asks whether it has (no fsync on the host's goroutine every pass for
	// a topic that keeps everything).
	_, err := s.log.RetainBelow(now, maxAge, maxBytes, limit, func(int64) error { return errWouldRemove })
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, errWouldRemove) {
		return 0, err
	}
	if _, err := s.log.Sync(); err != nil {
		return 0, err
	}
	// The compaction point is saved before any segment is deleted: entry
	// indexes are counted from it (derive), so a log that starts after it
	// could not be read back; one that starts before it can.
	return s.log.RetainBelow(now, maxAge, maxBytes, limit, func(start int64) error {
		return s.compact(start, applied)
	})
}

// errWouldRemove stops Retain's first pass, which only asks.
var errWouldRemove = errors.New("raftlog: retention would remove segments")

// ErrNoConfHistory is Retain's refusal to compact a log whose meta file
// has no configuration for the entries it would compact.
var ErrNoConfHistory = errors.New("raftlog: no configuration history before the last configuration change " +
	"(a meta file of version 1): retention keeps this log")

// compact moves the compaction point up to the entry before the batch
// the partition log is about to start at, and at most to entry applied,
// and saves it.
func (s *Storage) compact(start int64, applied uint64) error {
	if start <= s.st.Compacted.Offset {
		return nil
	}
	// k: the first entry at or after start that is not a control entry
	// sitting at start (those go with the entries before).
	k := sort.Search(len(s.offs), func(j int) bool { return s.offs[j] >= start })
	for k < len(s.offs) && s.offs[k] == start && s.cnts[k] == 0 {
		k++
	}
	if k < len(s.offs) && (s.offs[k] != start || s.cnts[k] == 0) || k == len(s.offs) && s.end != start {
		return fmt.Errorf("%w: the log would start at %d, not at a batch of the Raft log", ErrMismatch, start)
	}
	c := min(s.first+uint64(k)-1, applied)
	if c < s.first {
		return nil
	}
	// The configuration at c: the last applied change at or before it.
	ci := sort.Search(len(s.st.Confs), func(j int) bool { return s.st.Confs[j].Index > c }) - 1
	if ci < 0 {
		return ErrNoConfHistory
	}
	st := &s.st
	st.Compacted.Index, st.Compacted.Term = c, s.termOf(c)
	st.Compacted.Offset, st.Compacted.Conf = s.offsetEnd(c), st.Confs[ci].Conf
	st.Confs = st.Confs[ci:]
	n := sort.Search(len(st.Terms), func(j int) bool { return st.Terms[j].Index > c })
	st.Terms = st.Terms[n:]
	n = sort.Search(len(st.Ctl), func(j int) bool { return st.Ctl[j].Index > c })
	for _, k := range st.Ctl[:n] {
		delete(s.ctl, k.Index)
	}
	st.Ctl = st.Ctl[n:]
	drop := c + 1 - s.first
	s.offs = append([]int64(nil), s.offs[drop:]...)
	s.cnts = append([]int32(nil), s.cnts[drop:]...)
	s.pos = append([]int64(nil), s.pos[drop:]...)
	s.first = c + 1
	s.soft = max(s.soft, s.first)
	if s.tailFirst < s.first {
		// Entries up to c are applied, so committed: no tail to drop.
		s.tailFirst = s.first
	}
	return s.save()
}

// Append stores entries from a Ready, cutting off any entries they replace.
// Batch entries are written to the partition log (Sync makes them durable);
// control entries and new terms are saved in the meta file before Append
// returns.
func (s *Storage) Append(ents []raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lo := ents[0].Index
	if lo < s.first {
		return fmt.Errorf("raftlog: append at %d below the first index %d", lo, s.first)
	}
	if lo > s.lastIndex()+1 {
		return fmt.Errorf("raftlog: append at %d leaves a gap after %d", lo, s.lastIndex())
	}
	metaChanged := false
	if lo <= s.lastIndex() {
		// Cut the log first, then the meta file: a crash between the two
		// leaves meta records that derive drops.
		if lo < s.tailFirst {
			return fmt.Errorf("raftlog: append at %d would cut committed entries (up to %d)", lo, s.tailFirst-1)
		}
		k := lo - s.first
		cut := s.offs[k]
		if err := s.log.Truncate(cut); err != nil {
			return fmt.Errorf("raftlog: truncate at entry %d (offset %d): %w", lo, cut, err)
		}
		for idx := lo; idx <= s.lastIndex(); idx++ {
			delete(s.ctl, idx)
		}
		s.offs, s.cnts, s.pos = s.offs[:k], s.cnts[:k], s.pos[:k]
		s.soft = min(s.soft, lo) // not past a cut entry (soft is at most applied+1, so never)
		clear(s.tail[lo-s.tailFirst:])
		s.tail = s.tail[:lo-s.tailFirst]
		s.end = cut
		n := sort.Search(len(s.st.Ctl), func(j int) bool { return s.st.Ctl[j].Index >= lo })
		s.st.Ctl = s.st.Ctl[:n]
		n = sort.Search(len(s.st.Terms), func(j int) bool { return s.st.Terms[j].Index >= lo })
		s.st.Terms = s.st.Terms[:n]
		metaChanged = true
	}
	// Record new terms and control entries, and save them before any batch
	// of theirs is written.
	lastTerm := s.termOf(lo - 1)
	for i := range ents {
		e := &ents[i]
		if e.Term != lastTerm {
			s.st.Terms = append(s.st.Terms, termStart{Term: e.Term, Index: e.Index})
			lastTerm = e.Term
			metaChanged = true
		}
		if e.Type != raftpb.EntryNormal || len(e.Data) == 0 {
			metaChanged = true
		}
	}
	end := s.end
	for i := range ents {
		e := &ents[i]
		if e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
			if wire.BatchSize(e.Data) != len(e.Data) {
				return fmt.Errorf("%w: entry %d is not a record batch", ErrMismatch, e.Index)
			}
			end += int64(wire.Batch(e.Data).Count())
			continue
		}
		s.st.Ctl = append(s.st.Ctl, control{Index: e.Index, Offset: end, Type: e.Type, Data: e.Data})
	}
	if metaChanged {
		if err := s.save(); err != nil {
			return err
		}
	}
	// A log that stages writes (storage.DiskLog) takes the Ready's batches
	// in one write per segment: one write per batch cost about 100 µs
	// each, which bounded a follower's catch-up to some 10,000 entries a
	// second (BenchmarkAppend).
	staged, _ := s.log.(storage.Staged)
	first := len(s.offs)
	for i := range ents {
		e := &ents[i]
		if e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
			// The batch takes the next offsets of the log: the same on every
			// replica, whose logs match up to here. The copy is stamped; the
			// entry's data, which Raft may be sending, is not touched.
			base, count := s.end, wire.Batch(e.Data).Count()
			b := storage.NewBuf(len(e.Data))
			copy(b.B, e.Data)
			wire.Batch(b.B).SetBaseOffset(base)
			var err error
			if staged != nil {
				err = staged.Stage(b, wire.Batch(b.B))
			} else {
				err = s.log.Append(b, wire.Batch(b.B))
			}
			b.Release() // the log took its own reference, or a copy
			if err != nil {
				s.forget(first)
				return fmt.Errorf("raftlog: append entry %d: %w", e.Index, err)
			}
			s.offs = append(s.offs, base)
			s.cnts = append(s.cnts, int32(count))
			s.pos = append(s.pos, s.posEnd()+int64(len(e.Data)))
			s.tail = append(s.tail, e.Data)
			s.end = base + int64(count)
			continue
		}
		c := control{Index: e.Index, Offset: s.end, Type: e.Type, Data: e.Data, term: e.Term}
		s.ctl[e.Index] = c
		s.offs = append(s.offs, s.end)
		s.cnts = append(s.cnts, 0)
		s.pos = append(s.pos, s.posEnd())
		s.tail = append(s.tail, nil)
	}
	if staged != nil {
		if written, err := staged.WritePending(); err != nil {
			// What was written stays (a Ready's batches can span two
			// segments, and the first write succeed): the entries up to the
			// first batch not written are in the log.
			staged.Resume()
			k := first
			for k < len(s.offs) && s.offs[k]+int64(s.cnts[k]) <= written {
				k++
			}
			s.forget(k)
			return fmt.Errorf("raftlog: append entries %d-%d: %w", lo, ents[len(ents)-1].Index, err)
		}
	}
	return nil
}

// forget drops from memory the entries from position k on, which a failed
// Append did not write (its caller fails the group: a restart derives the
// log again from what is on disk).
func (s *Storage) forget(k int) {
	if k >= len(s.offs) {
		return
	}
	for idx := s.first + uint64(k); idx <= s.lastIndex(); idx++ {
		delete(s.ctl, idx)
	}
	s.end = s.offs[k]
	drop := len(s.offs) - k
	s.offs, s.cnts, s.pos = s.offs[:k], s.cnts[:k], s.pos[:k]
	clear(s.tail[len(s.tail)-drop:])
	s.tail = s.tail[:len(s.tail)-drop]
}

// Sync makes the appended batches durable.
func (s *Storage) Sync() error {
	_, err := s.log.Sync()
	return err
}

// SetHardState records Raft's hard state. A new term or vote is saved
// durably before it returns (Raft must not send a message that depends on
// it before); a new commit index alone is kept in memory and saved with the
// next meta change. It also moves the log's visible end to the commit.
func (s *Storage) SetHardState(hs raftpb.HardState) error {
	if raft.IsEmptyHardState(hs) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.st.Hard
	if hs.Term != old.Term || hs.Vote != old.Vote {
		// The new term or vote is saved now, but not the new commit index:
		// it may cover entries of the same Ready that Append has yet to
		// write, in place of conflicting ones the log still holds, and a
		// crash before Append would make those look committed (Open shows
		// them, and Raft acknowledges what it does not hold). The commit
		// index goes with the next save, which Append makes after cutting.
		s.st.Hard = raftpb.HardState{Term: hs.Term, Vote: hs.Vote, Commit: old.Commit}
		if err := s.save(); err != nil {
			return err
		}
	}
	s.st.Hard = hs
	if hs.Commit != old.Commit {
		s.dirty = true
	}
	return nil
}

// SetConfState records a group's first configuration, durably.
func (s *Storage) SetConfState(cs raftpb.ConfState) error { return s.ApplyConfState(cs, 0) }

// ApplyConfState records the configuration that applying the committed
// configuration change at index made, durably, before the host goes on.
func (s *Storage) ApplyConfState(cs raftpb.ConfState, index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Conf, s.st.ConfIndex = cs, index
	if n := len(s.st.Confs); n > 0 && s.st.Confs[n-1].Index >= index {
		// The group's first configuration, or one given again.
		s.st.Confs = s.st.Confs[:n-1]
	}
	s.st.Confs = append(s.st.Confs, confAt{Index: index, Conf: cs})
	return s.save()
}

// Commit makes the batches up to entry index visible to readers and
// returns the offset after them.
func (s *Storage) Commit(index uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	index = min(index, s.lastIndex())
	end := s.offsetEnd(index)
	s.log.SetVisible(end)
	if index >= s.tailFirst {
		n := index + 1 - s.tailFirst
		clear(s.tail[:n])
		s.tail = s.tail[n:]
		s.tailFirst = index + 1
	}
	return end
}

// SaveCommit writes a commit index kept in memory since the last meta
// change, so a restart shows more of the log at once. It is optional.
func (s *Storage) SaveCommit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	return s.save()
}

// EndOffset returns the offset after the last entry: where the leader
// stamps the next batch it proposes once everything proposed is appended.
func (s *Storage) EndOffset() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// BaseOffset returns the base offset of entry i, a batch entry, or -1.
func (s *Storage) BaseOffset(i uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < s.first || i > s.lastIndex() || s.cnts[i-s.first] == 0 {
		return -1
	}
	return s.offs[i-s.first]
}

// OffsetEnd returns the offset after entry i.
func (s *Storage) OffsetEnd(i uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offsetEnd(i)
}

// Log returns the partition log.
func (s *Storage) Log() Log { return s.log }

// SideFiles is a partition log that keeps small files of its own beside
// its segments (storage.DiskLog).
type SideFiles interface {
	WriteSideFile(name string, data []byte) error
	ReadSideFile(name string) ([]byte, error)
}

// MetaFile is the name of the meta file beside a partition's segments.
const MetaFile = "raft.meta"

// SideMeta keeps the meta file beside the partition log's segments,
// replaced atomically and durably.
type SideMeta struct{ L SideFiles }

// Load implements MetaStore.
func (m SideMeta) Load() ([]byte, error) {
	b, err := m.L.ReadSideFile(MetaFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// Save implements MetaStore.
func (m SideMeta) Save(data []byte) error { return m.L.WriteSideFile(MetaFile, data) }

// MemMeta keeps the meta file in memory: a memory topic's, lost with the
// node as its batches are.
type MemMeta struct {
	mu   sync.Mutex
	data []byte
}

// Load implements MetaStore.
func (m *MemMeta) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, nil
}

// Save implements MetaStore.
func (m *MemMeta) Save(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append(m.data[:0:0], data...)
	return nil
}

var (
	_ Log = (*storage.DiskLog)(nil)
	_ Log = (*storage.MemLog)(nil)
)
