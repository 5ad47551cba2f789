package vfs

import (
	"maps"
	"math/rand/v2"
	"slices"
)

// Crash returns a new MemFS holding only what was durable in m: the
// durable entries of every directory reachable from the root through
// durable entries, and for every file its contents at its last Sync. m
// itself is unchanged and its open files keep working on m; nothing done
// through m affects the result, nor the other way round.
func (m *MemFS) Crash() *MemFS {
	return m.crash(nil)
}

// CrashWith is Crash with torn writes: for each file whose current size
// exceeds its durable size, it also keeps a prefix, of length chosen
// uniformly with rng from zero to the whole, of the unsynced tail beyond
// the durable size. Overwrites inside the durable size are still lost.
// The same state and the same rng give the same crash.
func (m *MemFS) CrashWith(rng *rand.Rand) *MemFS {
	return m.crash(rng)
}

func (m *MemFS) crash(rng *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := crasher{rng: rng, seen: map[*inode]*inode{}}
	return &MemFS{root: c.copy(m.root)}
}

// crasher copies the durable state of a tree. seen maps old inodes to
// their copies, so a file reachable under two durable names (a rename
// across directories of which only one was synced) stays one file, and a
// cycle left by such renames of directories terminates.
type crasher struct {
	rng  *rand.Rand
	seen map[*inode]*inode
}

func (c *crasher) copy(n *inode) *inode {
	if cp, ok := c.seen[n]; ok {
		return cp
	}
	cp := &inode{mode: n.mode, mtime: n.mtime}
	c.seen[n] = cp
	if n.isDir() {
		c.copyDir(n, cp)
	} else {
		cp.data = slices.Concat(n.synced, c.tornTail(n))
		cp.synced = slices.Clone(cp.data)
		cp.clean = len(cp.data)
	}
	return cp
}

// copyDir copies a directory's durable entries in name order: the torn
// tails draw from rng file by file, so the same rng must give the same
// crash (the simulator replays a seed), which map order would not.
func (c *crasher) copyDir(n, cp *inode) {
	cp.kids = make(map[string]*inode, len(n.syncedKids))
	for _, name := range slices.Sorted(maps.Keys(n.syncedKids)) {
		cp.kids[name] = c.copy(n.syncedKids[name])
	}
	cp.syncedKids = maps.Clone(cp.kids)
}

// tornTail is the part of n's unsynced tail that survives.
func (c *crasher) tornTail(n *inode) []byte {
	if c.rng == nil || len(n.data) <= len(n.synced) {
		return nil
	}
	tail := n.data[len(n.synced):]
	return tail[:c.rng.IntN(len(tail)+1)]
}
