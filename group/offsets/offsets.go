// Package offsets keeps consumer groups' committed offsets durable, in
// one append-only log per broker (data/groups.log). It knows nothing of
// members, feeds or the protocol's sessions: the group coordinator (group/coord)
// hands it each group's offsets and activity, and gets a callback once they
// are synced. It imports storage (its file helpers and vfs) and wire (the
// str16 encoding and the error codes), never engine or gnet.
package offsets

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Committed offsets live in one append-only log, data/groups.log, so that
// a commit costs the disk what changed (one group's record) and one fsync
// however many groups share the write, instead of a rewrite of every
// group (docs/PERFORMANCE.md, issue 11). The format:
//
//	+--------------+-------------+
//	| magic "RGOL" | version u32 |                      header, 8 bytes
//	+--------------+-------------+
//	| length u32 | crc32c u32 | payload (length bytes) |  a record, repeated
//	+------------+------------+------------------------+
//
//	group state:   kind u8 = 1 | group str16 | topic str16 | active i64 | n u32 |
//	               n × (partition i32 | offset i64)
//	group removed: kind u8 = 2 | group str16
//
// Integers are big-endian and str16 is a u16 length and the bytes, as on
// the wire; the CRC (Castagnoli) covers the payload. active is the unix
// time in milliseconds of the group's last activity (a commit, an
// ack-floor move, its last member leaving), which group retention counts
// from. A record holds a group's whole state, so the last record of a
// group wins.
//
// Records are appended and fsynced; once the log is compactFactor times
// the size of its live state it is rewritten as a snapshot (every group's
// record) with storage.WriteFileAtomic. Any failed write abandons the log:
// the next write is a snapshot, which replaces whatever partial record the
// failure left. Recovery cuts a torn tail and skips damaged records that
// good ones follow, and then writes a snapshot.
const (
	offsetsLogMagic = "RGOL"
	offsetsVersion  = 1
	logHeaderSize   = 8
	recHeaderSize   = 8
	recGroup        = 1
	recRemoved      = 2
	// maxRecordBytes bounds a record: a group of 65536 partitions with
	// names of the longest str16.
	maxRecordBytes = 1 + 2*(2+math.MaxUint16) + 8 + 4 + 12<<16
	// compactMinBytes and compactFactor decide when the log is rewritten:
	// once it holds compactFactor times its live state, and at least
	// compactMinBytes, so the rewrite costs each commit a few bytes.
	compactMinBytes = 1 << 20
	compactFactor   = 4
)

// LogFile is the name of the log in the data directory.
const LogFile = "groups.log"

// LegacyFile is where the previous format kept every group's offsets in
// one JSON file, rewritten on each commit. It is converted at start and
// removed.
const LegacyFile = "groups.json"

// ErrClosed answers a change made after Close. It carries
// wire.CodeShuttingDown and the message of the broker's own
// shutting-down error, so a client cannot tell them apart.
var ErrClosed = wire.Errorf(wire.CodeShuttingDown, "the broker is shutting down")

// offsetLinger is how long the store waits to gather offset changes that
// nobody waits for (a message-mode ack floor moving) into one write.
const offsetLinger = 50 * time.Millisecond

// offsetRetry and offsetRetryMax pace the writes after a failed one, which
// retry with a snapshot until one succeeds.
const (
	offsetRetry    = time.Second
	offsetRetryMax = 30 * time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Group is what the store keeps of a group.
type Group struct {
	Topic   string          // the topic the group consumes
	Offsets map[int32]int64 // committed offset per partition
	Active  int64           // unix ms of the last activity
}

func (g *Group) clone() *Group {
	c := *g
	c.Offsets = make(map[int32]int64, len(g.Offsets))
	for p, o := range g.Offsets {
		c.Offsets[p] = o
	}
	return &c
}

// Store keeps committed offsets durable. Changes are gathered and
// written by one goroutine: a commit's callback runs once the write
// holding it is synced, so a commit that was answered OK survives a crash.
// Many commits arriving together share one write.
//
// Lock order: the caller's locks (group/coord's Coordinator.mu), then Store.mu;
// mu is taken with nothing else held by the store, and callbacks run
// without it.
type Store struct {
	fsys vfs.FS
	dir  string
	path string
	log  *slog.Logger

	mu      sync.Mutex
	now     func() time.Time // the clock of activity stamps; tests replace it
	groups  map[string]*Group
	dirty   map[string]struct{} // changed since the last write; absent from groups: removed
	waiters []waiter
	// repl, when not nil, is where the records go instead of the log
	// (a cluster: NewReplicated); epoch counts Forget calls, so that a
	// replicated write that failed is retried only if no group was handed
	// away meanwhile.
	repl  Replicator
	owns  func(group string) error
	epoch uint64
	cps   []func(group string) bool // checkpoints asked for (Checkpoint), for the next write
	// stored is, in a replicated store, each group's state as the
	// replicated log holds it, as far as this node knows: what Put took
	// in and what its writes stored since (Stored). inflight names the
	// groups of the write in flight, and forgot those of them that Forget
	// dropped meanwhile: what that write stored of them is no longer this
	// node's to report.
	stored   map[string]*Group
	inflight map[string]bool
	forgot   map[string]bool
	urgent   bool // a waiter is waiting: write without lingering
	failed   bool // the last write failed: retry
	closed   bool
	started  bool

	// The writer's: the log open for appending (nil: the next write is a
	// snapshot), where its whole records end, the last snapshot's size,
	// and the encoding buffer.
	f    vfs.File
	size int64
	live int64
	buf  []byte

	kick chan struct{}
	quit chan struct{}
	done chan struct{}
}

// waiter is a change's callback, with the group it changed: a replicated
// write succeeds or fails per group.
type waiter struct {
	group string
	done  func(error)
}

// New returns the store of the broker whose data directory is dataDir on
// fsys. It reads nothing until Load.
func New(fsys vfs.FS, dataDir string, log *slog.Logger) *Store {
	return &Store{fsys: fsys, dir: dataDir, path: dataDir + "/" + LogFile, log: log, now: time.Now,
		groups: map[string]*Group{}, dirty: map[string]struct{}{},
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// Load reads the log, converts a groups.json of the previous format, and
// returns a copy of every group. A log that was repaired or converted is
// rewritten before load returns, and groups.json removed after that.
func (s *Store) Load() (_ map[string]*Group, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repl != nil {
		return map[string]*Group{}, nil // groups arrive with Put as this node comes to coordinate them
	}
	defer func() {
		if err != nil {
			s.closeLog() // the broker does not start: nothing more is written
		}
	}()
	b, err := storage.ReadFile(s.fsys, s.path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("engine: %s: %w", LogFile, err)
	}
	clean := true
	if exists {
		if clean, err = s.parseLog(b); err != nil {
			return nil, err
		}
	}
	legacy, err := s.readLegacy()
	if err != nil {
		return nil, err
	}
	switch {
	case !clean || legacy:
		if err := s.writeSnapshot(s.encode(true)); err != nil {
			return nil, fmt.Errorf("engine: rewriting %s: %w", LogFile, err)
		}
	case exists:
		if err := s.openLog(int64(len(b))); err != nil {
			return nil, err
		}
	}
	if legacy {
		if err := s.removeLegacy(); err != nil {
			return nil, err
		}
	}
	out := make(map[string]*Group, len(s.groups))
	for name, g := range s.groups {
		out[name] = g.clone()
	}
	return out, nil
}

// openLog opens the log for appending after its size bytes of records.
func (s *Store) openLog(size int64) error {
	f, err := s.fsys.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("engine: %s: %w", LogFile, err)
	}
	s.f, s.size, s.live = f, size, s.snapshotSize()
	return nil
}

// snapshotSize is the size a snapshot of the groups would have; mu held.
func (s *Store) snapshotSize() int64 {
	n := int64(logHeaderSize)
	for name, g := range s.groups {
		n += int64(recHeaderSize + 1 + 2 + len(name) + 2 + len(g.Topic) + 8 + 4 + 12*len(g.Offsets))
	}
	return n
}

// Start starts the writer, after Load. Changes made before it are
// written by its first pass (or by Close).
func (s *Store) Start() {
	s.started = true
	go s.run()
}

// Flush writes what changed since the last write on the caller's
// goroutine, runs the waiting callbacks with its outcome, and returns it.
// It is for a store whose writer was never started: the simulator (sim)
// drives the store one step at a time, so that which write a commit
// shares, and what a crash finds, depend on its seed alone and not on
// the writer goroutine's timers (linger, retry backoff). After Start,
// the writer is the only one that writes, and Flush panics.
func (s *Store) Flush() error {
	if s.started {
		panic("offsets: Flush on a store whose writer runs")
	}
	return s.flush()
}

// Set records offsets without waiting for them to be durable; done, if not
// nil, runs once they are (or with the error that kept them from it).
func (s *Store) Set(group, topic string, offs []wire.PartitionOffset, done func(error)) {
	if !s.lockFor(group, done) {
		return
	}
	g := s.groups[group]
	if g == nil || g.Topic != topic {
		g = &Group{Topic: topic, Offsets: map[int32]int64{}}
		s.groups[group] = g
	}
	for _, o := range offs {
		g.Offsets[o.Partition] = o.Offset
	}
	g.Active = s.now().UnixMilli()
	s.changed(group, done)
	s.mu.Unlock()
}

// Touch moves a stored group's last activity to at, if that is later.
func (s *Store) Touch(group string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[group]; g != nil && !s.closed && s.refused(group) == nil && at.UnixMilli() > g.Active {
		g.Active = at.UnixMilli()
		s.changed(group, nil)
	}
}

// SetClock replaces the clock that stamps the groups' activity (time.Now
// by default), for tests of group retention.
func (s *Store) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Clock reads the store's clock.
func (s *Store) Clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// ActiveAt is a stored group's last activity.
func (s *Store) ActiveAt(group string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[group]
	if g == nil {
		return time.Time{}, false
	}
	return time.UnixMilli(g.Active), true
}

// lockFor takes mu for a change of group unless the store is closed, or
// is a replicated store and this node does not coordinate the group
// (NewReplicated); then it tells done why (when not nil) and returns
// false without the lock.
func (s *Store) lockFor(group string, done func(error)) bool {
	s.mu.Lock()
	err := error(ErrClosed)
	if !s.closed {
		if err = s.refused(group); err == nil {
			return true
		}
	}
	s.mu.Unlock()
	if done != nil {
		done(err)
	}
	return false
}

// Remove forgets a group.
func (s *Store) Remove(group string, done func(error)) {
	if !s.lockFor(group, done) {
		return
	}
	delete(s.groups, group)
	s.changed(group, done)
	s.mu.Unlock()
}

// changed notes a change of group; mu held.
func (s *Store) changed(group string, done func(error)) {
	s.dirty[group] = struct{}{}
	if done != nil {
		s.waiters = append(s.waiters, waiter{group, done})
		s.urgent = true
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run is the writer. After a failed write it retries, backing off, until
// a write succeeds.
func (s *Store) run() {
	defer close(s.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := offsetRetry
	for {
		select {
		case <-s.kick:
			s.linger()
		case <-retry.C:
		case <-s.quit:
			_ = s.flush() // logged, and answered to its waiters
			s.closeLog()
			return
		}
		if s.flush() == nil {
			backoff = offsetRetry
			continue
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, offsetRetryMax)
	}
}

// linger waits up to offsetLinger for more changes, unless one of them has
// a waiter or the store closes.
func (s *Store) linger() {
	t := time.NewTimer(offsetLinger)
	defer t.Stop()
	for {
		s.mu.Lock()
		hurry := s.urgent || s.closed
		s.mu.Unlock()
		if hurry {
			return
		}
		select {
		case <-t.C:
			return
		case <-s.quit:
			return
		case <-s.kick:
		}
	}
}

// flush writes what changed since the last write: the changed groups'
// records appended to the log, or a snapshot of every group when there is
// no log to append to or it has grown compactFactor times its live state.
// The waiters get its outcome.
func (s *Store) flush() error {
	if s.repl != nil {
		return s.flushReplicated()
	}
	s.mu.Lock()
	if len(s.dirty) == 0 && !s.failed {
		s.mu.Unlock()
		return nil
	}
	snapshot := s.f == nil || s.size >= max(compactMinBytes, compactFactor*s.live)
	b := s.encode(snapshot)
	waiters := s.waiters
	s.waiters, s.urgent = nil, false
	s.mu.Unlock()

	var err error
	if snapshot {
		err = s.writeSnapshot(b)
	} else {
		err = s.appendLog(b)
	}
	s.mu.Lock()
	s.failed = err != nil
	s.mu.Unlock()
	if err != nil {
		s.log.Error("writing committed offsets; retrying", "file", s.path, "err", err)
		err = wire.Errorf(storage.Code(err), "store committed offsets: "+err.Error())
	}
	for _, w := range waiters {
		w.done(err)
	}
	return err
}

// encode returns the records to write, every group's after a header for
// a snapshot, else the changed groups'; mu held.
func (s *Store) encode(snapshot bool) []byte {
	b := s.buf[:0]
	if snapshot {
		b = append(b, offsetsLogMagic...)
		b = binary.BigEndian.AppendUint32(b, offsetsVersion)
		for name, g := range s.groups {
			b = appendGroupRecord(b, name, g)
		}
	} else {
		for name := range s.dirty {
			if g := s.groups[name]; g != nil {
				b = appendGroupRecord(b, name, g)
			} else {
				b = appendRemovedRecord(b, name)
			}
		}
	}
	clear(s.dirty)
	s.buf = b
	return b
}

// writeSnapshot replaces the log with b and opens it for appending.
func (s *Store) writeSnapshot(b []byte) error {
	s.closeLog()
	if err := storage.WriteFileAtomic(s.fsys, s.path, b, true); err != nil {
		return err
	}
	f, err := s.fsys.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		// The snapshot is durable; the next write makes another.
		s.log.Error("reopening the committed offsets log", "file", s.path, "err", err)
		return nil
	}
	s.f, s.size, s.live = f, int64(len(b)), int64(len(b))
	return nil
}

// appendLog appends b to the log and syncs it. A failure abandons the
// log: its tail may hold part of b, and after a failed sync what the file
// holds is unknown, so the next write replaces it.
func (s *Store) appendLog(b []byte) error {
	_, err := s.f.WriteAt(b, s.size)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		s.closeLog()
		return err
	}
	s.size += int64(len(b))
	return nil
}

func (s *Store) closeLog() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}

// Close writes what is pending and stops the writer.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.quit)
	if s.started {
		<-s.done
		return
	}
	_ = s.flush()
	s.closeLog()
}

// appendGroupRecord appends the record of a group's state.
func appendGroupRecord(b []byte, name string, g *Group) []byte {
	at := len(b)
	b = binary.BigEndian.AppendUint64(b, 0) // length and CRC, sealed below
	b = append(b, recGroup)
	b = wire.AppendStr16(b, name)
	b = wire.AppendStr16(b, g.Topic)
	b = binary.BigEndian.AppendUint64(b, uint64(g.Active))
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Offsets)))
	for p, o := range g.Offsets {
		b = binary.BigEndian.AppendUint32(b, uint32(p))
		b = binary.BigEndian.AppendUint64(b, uint64(o))
	}
	return sealRecord(b, at)
}

// appendRemovedRecord appends the record of a group's removal.
func appendRemovedRecord(b []byte, name string) []byte {
	at := len(b)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = append(b, recRemoved)
	b = wire.AppendStr16(b, name)
	return sealRecord(b, at)
}

// sealRecord fills in the length and CRC of the record that starts at at.
func sealRecord(b []byte, at int) []byte {
	payload := b[at+recHeaderSize:]
	binary.BigEndian.PutUint32(b[at:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[at+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// logRecord is a decoded record: a group's state, or its removal (g nil).
type logRecord struct {
	name string
	g    *Group
}

// readRecord decodes the record at b[pos:]. ok is false when no whole,
// valid record starts there.
func readRecord(b []byte, pos int) (rec logRecord, next int, ok bool) {
	if len(b)-pos < recHeaderSize {
		return rec, 0, false
	}
	n := int(binary.BigEndian.Uint32(b[pos:]))
	if n > maxRecordBytes || n > len(b)-pos-recHeaderSize {
		return rec, 0, false
	}
	payload := b[pos+recHeaderSize : pos+recHeaderSize+n]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[pos+4:]) {
		return rec, 0, false
	}
	rec, ok = decodeRecord(payload)
	return rec, pos + recHeaderSize + n, ok
}

func decodeRecord(payload []byte) (logRecord, bool) {
	d := wire.NewDecoder(payload)
	kind := d.U8()
	rec := logRecord{name: d.String16()}
	if kind == recGroup {
		rec.g = &Group{Topic: d.String16(), Active: d.I64(), Offsets: map[int32]int64{}}
		for n := d.U32(); n > 0 && d.Err() == nil; n-- {
			p := d.I32()
			rec.g.Offsets[p] = d.I64()
		}
	} else if kind != recRemoved {
		return rec, false
	}
	return rec, d.Done() == nil
}

// parseLog applies the records of the log b to the groups; mu held. It
// reports whether the log was whole: a torn tail is cut, damaged records
// followed by good ones are skipped (and logged), and either makes load
// rewrite the log.
func (s *Store) parseLog(b []byte) (clean bool, err error) {
	if len(b) < logHeaderSize || string(b[:4]) != offsetsLogMagic {
		return false, fmt.Errorf("engine: %s is not a consumer-group offsets log (bad header); move it away to start without the groups' offsets", s.path)
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != offsetsVersion {
		return false, fmt.Errorf("engine: %s has version %d; this broker reads version %d", s.path, v, offsetsVersion)
	}
	clean = true
	for pos := logHeaderSize; pos < len(b); {
		rec, next, ok := readRecord(b, pos)
		if ok {
			s.apply(rec)
			pos = next
			continue
		}
		clean = false
		good := nextRecord(b, pos+1)
		if good < 0 {
			s.log.Warn("cut the torn tail of the committed offsets log", "file", s.path, "at", pos, "bytes", len(b)-pos)
			break
		}
		s.log.Error("skipped damaged records of the committed offsets log; groups whose last record was among them restart from an earlier commit",
			"file", s.path, "from", pos, "to", good)
		pos = good
	}
	return clean, nil
}

// nextRecord is the position of the first valid record at or after from,
// or -1.
func nextRecord(b []byte, from int) int {
	for i := from; i+recHeaderSize < len(b); i++ {
		if _, _, ok := readRecord(b, i); ok {
			return i
		}
	}
	return -1
}

// apply makes a record the group's state; mu held.
func (s *Store) apply(rec logRecord) {
	if rec.g == nil {
		delete(s.groups, rec.name)
		return
	}
	s.groups[rec.name] = rec.g
}

// legacyGroup and legacyFile are the previous format, groups.json.
type legacyGroup struct {
	Topic   string          `json:"topic"`
	Offsets map[int32]int64 `json:"offsets"`
}

type legacyFile struct {
	Version int                     `json:"version"`
	Groups  map[string]*legacyGroup `json:"groups"`
}

// readLegacy reads groups.json, if there is one, into the groups, as
// active now; mu held. Its groups replace those of the log: it exists
// only if the broker that wrote it ran after the log's last write, or a
// conversion stopped before removing it (and then both agree).
func (s *Store) readLegacy() (bool, error) {
	path := s.dir + "/" + LegacyFile
	b, err := storage.ReadFile(s.fsys, path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("engine: %s: %w", LegacyFile, err)
	}
	var f legacyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return false, fmt.Errorf("engine: %s: %w", LegacyFile, err)
	}
	if f.Version != 1 {
		return false, fmt.Errorf("engine: %s has version %d; this broker converts version 1", LegacyFile, f.Version)
	}
	now := s.now().UnixMilli()
	for name, g := range f.Groups {
		switch {
		case g == nil || g.Offsets == nil:
		case len(name) > math.MaxUint16 || len(g.Topic) > math.MaxUint16:
			s.log.Error("dropping a group whose name or topic is too long to store", "file", path,
				"group", name[:min(len(name), 64)], "topic", g.Topic[:min(len(g.Topic), 64)])
		default:
			s.groups[name] = &Group{Topic: g.Topic, Offsets: g.Offsets, Active: now}
		}
	}
	s.log.Info("converting committed offsets to the offsets log", "from", path, "to", s.path, "groups", len(f.Groups))
	return true, nil
}

// removeLegacy removes groups.json once the log holding its groups is
// durable.
func (s *Store) removeLegacy() error {
	path := s.dir + "/" + LegacyFile
	if err := s.fsys.Remove(path); err != nil {
		return fmt.Errorf("engine: removing %s after converting it: %w", LegacyFile, err)
	}
	if err := s.fsys.SyncDir(s.dir); err != nil {
		return fmt.Errorf("engine: removing %s after converting it: %w", LegacyFile, err)
	}
	return nil
}
