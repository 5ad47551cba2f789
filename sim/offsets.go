package sim

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"

	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The offsets actor drives group/offsets.Store, the committed-offsets
// log data/groups.log, on the machine's disk through an ErrorFS: groups
// commit offsets (forward only, as a group's members do), are removed,
// the store restarts cleanly, and the machine crashes. The store's writer
// goroutine is never started: each change is flushed at once with
// Store.Flush, on the scheduler's goroutine, so one change is one write
// and a crash finds what the seed decides. (One change per write also
// keeps the log's bytes independent of map order: the store encodes the
// changed groups in map order.)
const (
	offsetsDir       = "data"
	offsetsGroups    = 4
	offsetsParts     = 3
	offsetsFilesOpen = 1 // the store keeps its log open
)

type offsetsActor struct {
	efs   *vfs.ErrorFS
	store *offsets.Store
	// hist holds, per group, every state it may be found in after a
	// crash: the last one a commit was answered OK for, and those after.
	hist map[string][]groupState
}

// groupState is a group's offsets; nil for a group that does not exist.
type groupState map[int32]int64

func newOffsetsActor(w *World) (Actor, error) {
	if err := w.Mem.MkdirAll(offsetsDir, 0o700); err != nil {
		return nil, err
	}
	if err := w.Mem.SyncDir("/"); err != nil {
		return nil, err
	}
	a := &offsetsActor{hist: map[string][]groupState{}}
	for g := range offsetsGroups {
		a.hist[groupName(g)] = []groupState{nil}
	}
	_, err := a.open(w)
	return a, err
}

func groupName(g int) string { return fmt.Sprintf("g%d", g) }

func (a *offsetsActor) Name() string { return "offsets" }

// open loads the store from w.Mem, with the simulated clock.
func (a *offsetsActor) open(w *World) (map[string]*offsets.Group, error) {
	a.efs = vfs.NewErrors(w.Mem)
	a.store = offsets.New(a.efs, offsetsDir, w.Log)
	a.store.SetClock(w.Time)
	return a.store.Load()
}

func (a *offsetsActor) Step(w *World) error {
	g := groupName(w.Rand.IntN(offsetsGroups))
	switch r := w.Rand.IntN(100); {
	case r < 85:
		return a.commit(w, g)
	case r < 92:
		return a.remove(w, g)
	default:
		return a.restart(w)
	}
}

func (a *offsetsActor) latest(g string) groupState {
	h := a.hist[g]
	return h[len(h)-1]
}

// commit moves some of a group's offsets forward, waits or not for the
// write (a commit waits; an ack floor moving does not), and flushes.
func (a *offsetsActor) commit(w *World, g string) error {
	next := maps.Clone(a.latest(g))
	if next == nil {
		next = groupState{}
	}
	var offs []wire.PartitionOffset
	for p := range int32(offsetsParts) {
		if w.Rand.IntN(2) == 0 {
			next[p] += w.Rand.Int64N(50)
			offs = append(offs, wire.PartitionOffset{Partition: p, Offset: next[p]})
		}
	}
	if len(offs) == 0 {
		next[0] += 0 // a commit of an unchanged offset still names it
		offs = append(offs, wire.PartitionOffset{Partition: 0, Offset: next[0]})
	}
	a.hist[g] = append(a.hist[g], next)
	wait := w.Rand.IntN(4) != 0
	var done func(error)
	if wait {
		done = a.answer(g, len(a.hist[g])-1)
	}
	a.store.Set(g, "t", offs, done)
	return a.flush(w, fmt.Sprintf("commit %s %v wait=%v", g, offs, wait))
}

// remove removes a group.
func (a *offsetsActor) remove(w *World, g string) error {
	a.hist[g] = append(a.hist[g], nil)
	a.store.Remove(g, a.answer(g, len(a.hist[g])-1))
	return a.flush(w, "remove "+g)
}

// answer is the callback of the change that made hist[g][v]: on success
// the states before it can no longer be found after a crash.
func (a *offsetsActor) answer(g string, v int) func(error) {
	return func(err error) {
		if err == nil {
			h := a.hist[g]
			a.hist[g] = append(h[:0], h[v:]...)
		}
	}
}

// flush writes the change, maybe with a fault injected.
func (a *offsetsActor) flush(w *World, what string) error {
	fault := a.injectFault(w)
	err := a.store.Flush()
	a.efs.Clear()
	w.Tracef("offsets %s fault=%s: %v", what, fault, err)
	if err != nil && fault == "" {
		return fmt.Errorf("%s failed with no fault injected: %w", what, err)
	}
	return nil
}

// injectFault arms, now and then, a failing write, fsync or rename of
// the store's files.
func (a *offsetsActor) injectFault(w *World) string {
	if w.Rand.IntN(1000) >= faultOdds {
		return ""
	}
	mine := func(name string) bool { return strings.HasPrefix(name, offsetsDir+"/"+offsets.LogFile) }
	switch w.Rand.IntN(3) {
	case 0:
		a.efs.InjectWrite(mine, syscall.ENOSPC, 0)
		return "enospc"
	case 1:
		a.efs.InjectSync(nil, syscall.EIO, 0)
		return "fsync-eio"
	default:
		a.efs.Inject(vfs.OpRename, mine, syscall.EIO, 0)
		return "rename-eio"
	}
}

// restart closes the store cleanly and loads it: every change is found,
// the last of each group.
func (a *offsetsActor) restart(w *World) error {
	a.store.Close()
	loaded, err := a.open(w)
	w.Tracef("offsets restart: %d groups %v", len(loaded), err)
	if err != nil {
		return fmt.Errorf("load after a clean close: %w", err)
	}
	for g := range a.hist {
		if got, want := state(loaded[g]), a.latest(g); !equalState(got, want) {
			return fmt.Errorf("after a clean restart group %s has %v, its last change was %v", g, got, want)
		}
	}
	a.settle(loaded)
	return nil
}

// Crash loads the store from the crashed disk: each group must be found
// as it was at its last answered change or later, never earlier, so no
// committed offset goes back; and never in a state it was not given.
func (a *offsetsActor) Crash(w *World) error {
	loaded, err := a.open(w)
	w.Tracef("offsets recover: %d groups %v", len(loaded), err)
	if err != nil {
		return fmt.Errorf("load after a crash: %w", err)
	}
	var errs []error
	for _, g := range slices.Sorted(maps.Keys(a.hist)) {
		got := state(loaded[g])
		if !slices.ContainsFunc(a.hist[g], func(s groupState) bool { return equalState(s, got) }) {
			errs = append(errs, fmt.Errorf("group %s recovered as %v; its last answered state was %v, and the later ones %v",
				g, got, a.hist[g][0], a.hist[g][1:]))
		}
	}
	a.settle(loaded)
	return errors.Join(errs...)
}

// settle makes what was loaded each group's only state: it is durable.
func (a *offsetsActor) settle(loaded map[string]*offsets.Group) {
	for g := range a.hist {
		a.hist[g] = []groupState{state(loaded[g])}
	}
}

func state(g *offsets.Group) groupState {
	if g == nil {
		return nil
	}
	return g.Offsets
}

func equalState(a, b groupState) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return maps.Equal(a, b)
}

// Check: the store knows the group exists exactly when its last change
// says so, and the log stays within its compaction bound.
func (a *offsetsActor) Check(w *World) error {
	for _, g := range slices.Sorted(maps.Keys(a.hist)) {
		_, ok := a.store.ActiveAt(g)
		if want := a.latest(g) != nil; ok != want {
			return fmt.Errorf("group %s: the store has it %v, the model %v", g, ok, want)
		}
	}
	if st, err := w.Mem.Stat(offsetsDir + "/" + offsets.LogFile); err == nil && st.Size() > 1<<20+64<<10 {
		return fmt.Errorf("%s is %d bytes: past its compaction bound", offsets.LogFile, st.Size())
	}
	for g, h := range a.hist {
		if len(h) > 64 {
			return fmt.Errorf("group %s: %d changes since one was last answered", g, len(h))
		}
	}
	return nil
}
