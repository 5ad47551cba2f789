package offsets

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
)

// In a cluster the committed offsets are not in groups.log but in a
// replicated log (the engine's internal offsets topic, one Raft group per
// partition): the store keeps the groups this node coordinates in memory,
// as it does on a single broker, and writes each change as one record to
// the Replicator, which answers once a quorum holds it. The record is the
// one groups.log holds (EncodeRecord), so a node that comes to coordinate
// a group rebuilds its state by replaying the records (DecodeRecord: the
// last record of a group wins) and hands it to Put. A group this node no
// longer coordinates is dropped with Forget, without a record: its new
// coordinator owns it.

// Replicator writes a store's records to replicated state.
type Replicator interface {
	// Write makes each record durable where its group's offsets are
	// replicated and returns, per record, nil once it is committed, or
	// the error that kept it from that (NOT_LEADER when this node no
	// longer coordinates the group).
	Write(recs []Record) []error
}

// Record is one group's record, as EncodeRecord makes it.
type Record struct {
	Group string
	Data  []byte
	// Checkpoint marks the records of a checkpoint (Store.Checkpoint):
	// the records so marked in one Write hold the state of every group
	// the checkpoint covers.
	Checkpoint bool
}

// ErrBadRecord answers DecodeRecord given bytes that are not one whole
// record.
var ErrBadRecord = errors.New("offsets: not a consumer-group offsets record")

// NewReplicated returns a store that writes to r instead of a file. Load
// returns no groups; Put hands it those this node comes to coordinate.
// owns says whether this node coordinates a group (nil) or not (the
// error to answer a change of it with): a change of a group it does not
// is refused, so that a late change (a feed's ack floor after the group
// moved) never writes a stale state to the replicated log.
func NewReplicated(r Replicator, owns func(group string) error, log *slog.Logger) *Store {
	s := New(nil, "", log)
	s.repl, s.owns = r, owns
	s.stored, s.inflight, s.forgot = map[string]*Group{}, map[string]bool{}, map[string]bool{}
	return s
}

// refused is the error a change of group gets when this node does not
// coordinate it (replicated stores only); mu held.
func (s *Store) refused(group string) error {
	if s.owns == nil || group == "" {
		return nil
	}
	return s.owns(group)
}

// EncodeRecord is the record of group name's state g, or of its removal
// when g is nil.
func EncodeRecord(name string, g *Group) []byte {
	if g == nil {
		return appendRemovedRecord(nil, name)
	}
	return appendGroupRecord(nil, name, g)
}

// DecodeRecord decodes a record EncodeRecord made: the group's name and
// state, nil for a removal.
func DecodeRecord(b []byte) (string, *Group, error) {
	rec, next, ok := readRecord(b, 0)
	if !ok || next != len(b) {
		return "", nil, ErrBadRecord
	}
	return rec.name, rec.g, nil
}

// Put makes groups the stored state of those groups, without writing
// anything: what a node replayed when it came to coordinate them.
func (s *Store) Put(groups map[string]*Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, g := range groups {
		s.groups[name] = g.clone()
		delete(s.dirty, name)
		if s.stored != nil {
			s.stored[name] = g.clone()
		}
	}
}

// Stored is, in a replicated store, a copy of the state of the group
// named name that the replicated log holds: what Put took in, and the
// changes written since that the Replicator answered as committed. A
// change made (Set) but not yet committed is not in it, so that a reader
// never sees offsets that a crash of this node, or a new coordinator,
// could take back. A store that is not replicated reports its state, as
// Group does.
func (s *Store) Stored(name string) (*Group, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.stored
	if src == nil {
		src = s.groups
	}
	g := src[name]
	if g == nil {
		return nil, false
	}
	return g.clone(), true
}

// Group is a copy of the stored state of the group named name.
func (s *Store) Group(name string) (*Group, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[name]
	if g == nil {
		return nil, false
	}
	return g.clone(), true
}

// Forget drops the groups match selects, and their pending changes,
// without writing anything: another node coordinates them now. A write
// of theirs in flight that fails is not retried.
func (s *Store) Forget(match func(group string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	maps.DeleteFunc(s.groups, func(name string, _ *Group) bool { return match(name) })
	maps.DeleteFunc(s.dirty, func(name string, _ struct{}) bool { return match(name) })
	maps.DeleteFunc(s.stored, func(name string, _ *Group) bool { return match(name) })
	for name := range s.inflight {
		if match(name) {
			s.forgot[name] = true
		}
	}
}

// Checkpoint has the next write rewrite the state of every group match
// selects, all in that one Write and marked Checkpoint, so that the
// replicated log before those records holds nothing the groups need: the
// Replicator may then let retention remove it. It returns how many groups
// that is (none: no checkpoint). A checkpoint that cannot be whole (a
// group it covers has moved to another node since) is written as plain
// records.
func (s *Store) Checkpoint(match func(group string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.groups {
		if match(name) && s.refused(name) == nil {
			s.dirty[name] = struct{}{}
			n++
		}
	}
	if n > 0 {
		s.cps = append(s.cps, match)
		s.urgent = true
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return n
}

// Count returns how many groups match selects.
func (s *Store) Count(match func(group string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.groups {
		if match(name) {
			n++
		}
	}
	return n
}

// flushReplicated writes the changed groups' records to the Replicator
// and answers each waiter with its group's outcome. The changes of a
// failed write are written again (run retries) unless a Forget came
// between: the group may be another node's now, and writing its old
// state there would move its offsets back.
func (s *Store) flushReplicated() error {
	s.mu.Lock()
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		return nil
	}
	recs := make([]Record, 0, len(s.dirty))
	states := make([]*Group, 0, len(s.dirty)) // what each record stores; nil: a removal
	byGroup := map[string]error{}
	for _, name := range slices.Sorted(maps.Keys(s.dirty)) {
		if err := s.refused(name); err != nil {
			byGroup[name] = err // moved since it changed: its new coordinator owns it
			continue
		}
		g := s.groups[name]
		recs = append(recs, Record{Group: name, Data: EncodeRecord(name, g)})
		if g != nil {
			g = g.clone()
		}
		states = append(states, g)
		s.inflight[name] = true
	}
	s.markCheckpoints(recs)
	clear(s.dirty)
	waiters := s.waiters
	s.waiters, s.urgent = nil, false
	epoch := s.epoch
	s.mu.Unlock()

	var errs []error
	if len(recs) > 0 {
		errs = s.repl.Write(recs)
	}
	var first error
	s.mu.Lock()
	for i, r := range recs {
		switch {
		case errs[i] != nil:
			byGroup[r.Group] = errs[i]
			if first == nil {
				first = errs[i]
			}
		case s.forgot[r.Group]:
			// Handed away meanwhile (and maybe taken in again, with a
			// replay that holds this record and perhaps later ones).
		case states[i] == nil:
			delete(s.stored, r.Group)
		default:
			s.stored[r.Group] = states[i]
		}
	}
	clear(s.inflight)
	clear(s.forgot)
	s.mu.Unlock()
	if first != nil {
		s.mu.Lock()
		if s.epoch == epoch && !s.closed {
			for _, r := range recs {
				name := r.Group
				if byGroup[name] == nil {
					continue
				}
				if s.refused(name) == nil {
					s.dirty[name] = struct{}{}
				}
			}
		}
		s.mu.Unlock()
		s.log.Warn("replicating committed offsets; retrying", "groups", len(byGroup), "err", first)
	}
	for _, w := range waiters {
		w.done(byGroup[w.group])
	}
	return first
}

// markCheckpoints marks the records of each checkpoint asked for that
// recs hold whole: every group of the store it covers has its record
// there (none refused, none added since it was asked for). mu held.
func (s *Store) markCheckpoints(recs []Record) {
	if len(s.cps) == 0 {
		return
	}
	in := make(map[string]int, len(recs))
	for i, r := range recs {
		in[r.Group] = i
	}
	for _, cp := range s.cps {
		whole := true
		for name := range s.groups {
			if _, ok := in[name]; cp(name) && !ok {
				whole = false
				break
			}
		}
		if !whole {
			s.log.Debug("a checkpoint of the committed offsets is not whole; written as plain records")
			continue
		}
		for i := range recs {
			if cp(recs[i].Group) {
				recs[i].Checkpoint = true
			}
		}
	}
	s.cps = nil
}
