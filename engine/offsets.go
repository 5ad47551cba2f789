package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// offsetsFile records every group's committed offsets, so they survive a
// restart. Like topics.json it is replaced atomically (write, fsync,
// rename, fsync the directory).
const offsetsFile = "groups.json"

// offsetLinger is how long the store waits to gather offset changes that
// nobody waits for (a message-mode ack floor moving) into one write.
const offsetLinger = 50 * time.Millisecond

type storedGroup struct {
	Topic   string          `json:"topic"`
	Offsets map[int32]int64 `json:"offsets"`
}

type offsetsFileV1 struct {
	Version int                     `json:"version"`
	Groups  map[string]*storedGroup `json:"groups"`
}

// offsetStore keeps committed offsets durable. Changes are gathered and
// written by one goroutine: a commit's callback runs once the file holding
// it is synced, so a commit that was answered OK survives a crash. Many
// commits arriving together share one write.
type offsetStore struct {
	fsys vfs.FS
	path string
	log  *slog.Logger

	mu      sync.Mutex
	groups  map[string]*storedGroup
	dirty   bool
	urgent  bool // a waiter is waiting: write without lingering
	waiters []func(error)
	closed  bool
	started bool

	kick chan struct{}
	done chan struct{}
}

func newOffsetStore(fsys vfs.FS, dataDir string, log *slog.Logger) *offsetStore {
	return &offsetStore{fsys: fsys, path: dataDir + "/" + offsetsFile, log: log,
		groups: map[string]*storedGroup{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// load reads the file; a missing file is an empty store.
func (s *offsetStore) load() (map[string]*storedGroup, error) {
	b, err := storage.ReadFile(s.fsys, s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*storedGroup{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f offsetsFileV1
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("engine: %s: %w", offsetsFile, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("engine: %s has version %d; this broker reads version 1", offsetsFile, f.Version)
	}
	if f.Groups == nil {
		f.Groups = map[string]*storedGroup{}
	}
	for name, g := range f.Groups {
		if g == nil || g.Offsets == nil {
			delete(f.Groups, name)
		}
	}
	s.groups = f.Groups
	return maps.Clone(f.Groups), nil
}

func (s *offsetStore) start() {
	s.started = true
	go s.run()
}

// set records offsets without waiting for them to be durable; done, if not
// nil, runs once they are (or with the error that kept them from it).
func (s *offsetStore) set(group, topic string, offs []wire.PartitionOffset, done func(error)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if done != nil {
			done(errShuttingDown)
		}
		return
	}
	g := s.groups[group]
	if g == nil || g.Topic != topic {
		g = &storedGroup{Topic: topic, Offsets: map[int32]int64{}}
		s.groups[group] = g
	}
	for _, o := range offs {
		g.Offsets[o.Partition] = o.Offset
	}
	s.changed(done)
	s.mu.Unlock()
}

// remove forgets a group.
func (s *offsetStore) remove(group string, done func(error)) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if done != nil {
			done(errShuttingDown)
		}
		return
	}
	delete(s.groups, group)
	s.changed(done)
	s.mu.Unlock()
}

// changed notes a change; mu held.
func (s *offsetStore) changed(done func(error)) {
	s.dirty = true
	if done != nil {
		s.waiters = append(s.waiters, done)
		s.urgent = true
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *offsetStore) run() {
	defer close(s.done)
	for range s.kick {
		s.mu.Lock()
		urgent, closed := s.urgent, s.closed
		s.mu.Unlock()
		if !urgent && !closed {
			time.Sleep(offsetLinger)
		}
		if !s.flush() {
			return
		}
	}
}

// flush writes the store if it changed; it reports false once closed.
func (s *offsetStore) flush() bool {
	s.mu.Lock()
	if !s.dirty {
		closed := s.closed
		s.mu.Unlock()
		return !closed
	}
	f := offsetsFileV1{Version: 1, Groups: map[string]*storedGroup{}}
	for _, name := range slices.Sorted(maps.Keys(s.groups)) {
		g := s.groups[name]
		f.Groups[name] = &storedGroup{Topic: g.Topic, Offsets: maps.Clone(g.Offsets)}
	}
	waiters := s.waiters
	s.waiters, s.dirty, s.urgent = nil, false, false
	closed := s.closed
	s.mu.Unlock()

	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = storage.WriteFileAtomic(s.fsys, s.path, b, true)
	}
	if err != nil {
		s.log.Error("writing committed offsets", "file", s.path, "err", err)
		s.mu.Lock()
		s.dirty = true // the next change or close tries again
		s.mu.Unlock()
		err = wire.Errorf(storage.Code(err), "store committed offsets: "+err.Error())
	}
	for _, w := range waiters {
		w(err)
	}
	return !closed
}

// close writes what is pending and stops the writer.
func (s *offsetStore) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.kick)
	if s.started {
		<-s.done
	}
	s.flush()
}
