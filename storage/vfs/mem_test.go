package vfs

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// newCrashFS returns a MemFS with a durable directory "d".
func newCrashFS(t *testing.T) *MemFS {
	m := NewMem()
	require.NoError(t, m.MkdirAll("d", 0o755))
	require.NoError(t, m.SyncDir("/"))
	return m
}

// write creates (or truncates) name, writes data, and syncs as told.
func write(t *testing.T, fsys FS, name, data string, sync bool) File {
	t.Helper()
	f, err := fsys.OpenFile(name, rw|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	_, err = f.Write([]byte(data))
	require.NoError(t, err)
	if sync {
		require.NoError(t, f.Sync())
	}
	return f
}

func requireMissing(t *testing.T, fsys FS, name string) {
	t.Helper()
	_, err := fsys.Stat(name)
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestCrashLosesUnsyncedData(t *testing.T) {
	m := newCrashFS(t)
	write(t, m, "d/f", "lost", false)
	require.NoError(t, m.SyncDir("d"))
	require.Equal(t, "", contents(t, m.Crash(), "d/f"))
}

func TestCrashKeepsSyncedData(t *testing.T) {
	m := newCrashFS(t)
	f := write(t, m, "d/f", "kept", true)
	require.NoError(t, m.SyncDir("d"))
	_, err := f.Write([]byte("+lost"))
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("K"), 0)
	require.NoError(t, err)
	require.Equal(t, "Kept+lost", contents(t, m, "d/f"))
	require.Equal(t, "kept", contents(t, m.Crash(), "d/f"))
}

func TestCrashUndoesTruncate(t *testing.T) {
	m := newCrashFS(t)
	f := write(t, m, "d/f", "abcdef", true)
	require.NoError(t, m.SyncDir("d"))
	require.NoError(t, f.Truncate(2))
	require.Equal(t, "abcdef", contents(t, m.Crash(), "d/f"))
	require.NoError(t, f.Sync())
	require.Equal(t, "ab", contents(t, m.Crash(), "d/f"))
}

func TestCrashLosesFileInUnsyncedDirectory(t *testing.T) {
	m := newCrashFS(t)
	write(t, m, "d/f", "data", true) // data synced, entry not
	requireMissing(t, m.Crash(), "d/f")
	require.NoError(t, m.SyncDir("d"))
	require.Equal(t, "data", contents(t, m.Crash(), "d/f"))
}

func TestCrashLosesDirectoryUntilParentSynced(t *testing.T) {
	m := newCrashFS(t)
	require.NoError(t, m.MkdirAll("d/p/0", 0o755))
	write(t, m, "d/p/0/seg", "x", true)
	require.NoError(t, m.SyncDir("d/p/0"))
	requireMissing(t, m.Crash(), "d/p")
	require.NoError(t, m.SyncDir("d"))
	requireMissing(t, m.Crash(), "d/p/0")
	require.NoError(t, m.SyncDir("d/p"))
	require.Equal(t, "x", contents(t, m.Crash(), "d/p/0/seg"))
}

// TestCrashUndoesRename follows the log's metadata update: write a
// temporary file, sync it, rename it over the old one, sync the directory.
func TestCrashUndoesRename(t *testing.T) {
	m := newCrashFS(t)
	write(t, m, "d/meta", "v1", true)
	require.NoError(t, m.SyncDir("d"))
	write(t, m, "d/meta.tmp", "v2", true)
	require.NoError(t, m.Rename("d/meta.tmp", "d/meta"))

	c := m.Crash()
	require.Equal(t, "v1", contents(t, c, "d/meta"))
	requireMissing(t, c, "d/meta.tmp") // its creation was never synced

	require.NoError(t, m.SyncDir("d"))
	c = m.Crash()
	require.Equal(t, "v2", contents(t, c, "d/meta"))
	requireMissing(t, c, "d/meta.tmp")
}

func TestCrashRenameRevertsToOldName(t *testing.T) {
	m := newCrashFS(t)
	write(t, m, "d/a", "data", true)
	require.NoError(t, m.SyncDir("d"))
	require.NoError(t, m.Rename("d/a", "d/b"))
	c := m.Crash()
	require.Equal(t, "data", contents(t, c, "d/a"))
	requireMissing(t, c, "d/b")
}

func TestCrashRenameAcrossDirectories(t *testing.T) {
	m := newCrashFS(t)
	require.NoError(t, m.MkdirAll("e", 0o755))
	require.NoError(t, m.SyncDir("/"))
	write(t, m, "d/f", "data", true)
	require.NoError(t, m.SyncDir("d"))
	require.NoError(t, m.Rename("d/f", "e/f"))
	require.NoError(t, m.SyncDir("e")) // but not d: both names survive

	c := m.Crash()
	require.Equal(t, "data", contents(t, c, "d/f"))
	require.Equal(t, "data", contents(t, c, "e/f"))
}

func TestCrashRemovedFileReappears(t *testing.T) {
	m := newCrashFS(t)
	f := write(t, m, "d/f", "old", true)
	require.NoError(t, m.SyncDir("d"))
	require.NoError(t, m.Remove("d/f"))
	_, err := f.Write([]byte("+synced"))
	require.NoError(t, err)
	require.NoError(t, f.Sync()) // an open handle outlives the name
	require.Equal(t, "old+synced", contents(t, m.Crash(), "d/f"))

	require.NoError(t, m.SyncDir("d"))
	requireMissing(t, m.Crash(), "d/f")
}

func TestCrashRemoveAllTreeReappears(t *testing.T) {
	m := newCrashFS(t)
	require.NoError(t, m.MkdirAll("d/p", 0o755))
	write(t, m, "d/p/f", "x", true)
	require.NoError(t, m.SyncDir("d/p"))
	require.NoError(t, m.SyncDir("d"))
	require.NoError(t, m.RemoveAll("d/p"))
	require.Equal(t, "x", contents(t, m.Crash(), "d/p/f"))
	require.NoError(t, m.SyncDir("d"))
	requireMissing(t, m.Crash(), "d/p")
}

func TestCrashIsolatesOldHandles(t *testing.T) {
	m := newCrashFS(t)
	f := write(t, m, "d/f", "abc", true)
	require.NoError(t, m.SyncDir("d"))
	c := m.Crash()

	_, err := f.WriteAt([]byte("XYZW"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	write(t, m, "d/g", "new", true)
	require.NoError(t, m.SyncDir("d"))
	require.Equal(t, "abc", contents(t, c, "d/f"))
	requireMissing(t, c, "d/g")

	g := write(t, c, "d/f", "from c", true)
	require.NoError(t, g.Close())
	require.Equal(t, "XYZW", contents(t, m, "d/f"))
	require.NoError(t, f.Close())
}

func TestCrashedFSIsFullyDurable(t *testing.T) {
	m := newCrashFS(t)
	write(t, m, "d/f", "abc", true)
	require.NoError(t, m.SyncDir("d"))
	c := m.Crash().Crash()
	require.Equal(t, "abc", contents(t, c, "d/f"))
}

func TestCrashWithTearsTail(t *testing.T) {
	const synced, written = "0123456789", "0123456789abcdefghij"
	lengths := map[int]bool{}
	for seed := range uint64(200) {
		m := newCrashFS(t)
		f := write(t, m, "d/f", synced, true)
		require.NoError(t, m.SyncDir("d"))
		_, err := f.Write([]byte(written[len(synced):]))
		require.NoError(t, err)

		got := contents(t, m.CrashWith(rand.New(rand.NewPCG(seed, 1))), "d/f")
		require.GreaterOrEqual(t, len(got), len(synced))
		require.Equal(t, written[:len(got)], got)
		lengths[len(got)] = true
	}
	require.True(t, lengths[len(synced)], "sometimes the whole tail is lost")
	require.True(t, lengths[len(written)], "sometimes the whole tail is kept")
	require.Greater(t, len(lengths), 5)
}

// TestCrashWithIsDeterministic: the same state and the same rng give the
// same crash, however many files have torn tails (the simulator replays
// a seed; map order once decided which file drew which length).
func TestCrashWithIsDeterministic(t *testing.T) {
	m := newCrashFS(t)
	for i := range 16 {
		name := "d/f" + string(rune('a'+i))
		f := write(t, m, name, "synced", true)
		_, err := f.WriteAt([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), 6)
		require.NoError(t, err)
	}
	require.NoError(t, m.SyncDir("d"))
	tails := func() string {
		c := m.CrashWith(rand.New(rand.NewPCG(9, 9)))
		var all string
		for i := range 16 {
			all += contents(t, c, "d/f"+string(rune('a'+i))) + "|"
		}
		return all
	}
	want := tails()
	for range 20 {
		require.Equal(t, want, tails())
	}
}

func TestCrashWithKeepsSyncedRange(t *testing.T) {
	m := newCrashFS(t)
	f := write(t, m, "d/f", "abcd", true)
	require.NoError(t, m.SyncDir("d"))
	_, err := f.WriteAt([]byte("XY"), 2) // overwrite inside, no tail
	require.NoError(t, err)
	for seed := range uint64(20) {
		c := m.CrashWith(rand.New(rand.NewPCG(seed, 2)))
		require.Equal(t, "abcd", contents(t, c, "d/f"))
	}
}

// TestSyncMatchesFullCopy checks the incremental Sync against a model
// that copies the whole file on every Sync.
func TestSyncMatchesFullCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 50 {
		m := newCrashFS(t)
		f := write(t, m, "d/f", "", true)
		require.NoError(t, m.SyncDir("d"))
		var cur, durable []byte
		for range 40 {
			cur, durable = randomOp(t, rng, f, cur, durable)
			require.Equal(t, string(cur), contents(t, m, "d/f"))
			require.Equal(t, string(durable), contents(t, m.Crash(), "d/f"))
		}
	}
}

// randomOp applies a random write, truncate or sync to f and to the model.
func randomOp(t *testing.T, rng *rand.Rand, f File, cur, durable []byte) ([]byte, []byte) {
	switch rng.IntN(4) {
	case 0:
		size := rng.IntN(64)
		require.NoError(t, f.Truncate(int64(size)))
		cur = append(cur, make([]byte, max(0, size-len(cur)))...)[:size]
	case 1:
		require.NoError(t, f.Sync())
		durable = bytes.Clone(cur)
	default:
		off, p := rng.IntN(64), bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, 1+rng.IntN(16))
		_, err := f.WriteAt(p, int64(off))
		require.NoError(t, err)
		cur = append(cur, make([]byte, max(0, off+len(p)-len(cur)))...)
		copy(cur[off:], p)
	}
	return cur, durable
}

func TestMemPaths(t *testing.T) {
	m := NewMem()
	write(t, m, "/f", "x", false)
	require.Equal(t, "x", contents(t, m, "f"))
	require.Equal(t, "x", contents(t, m, "./f"))
	st, err := m.Stat("/")
	require.NoError(t, err)
	require.True(t, st.IsDir())
	_, err = m.Stat("")
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = m.OpenFile("/", os.O_RDONLY, 0)
	require.Error(t, err)
	require.Error(t, m.Remove("/"))
}

func TestMemAppendAndWriteOnly(t *testing.T) {
	m := NewMem()
	write(t, m, "f", "ab", false)
	f, err := m.OpenFile("f", os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte("cd"))
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("x"), 0)
	require.Error(t, err)
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.Error(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "abcd", contents(t, m, "f"))
}

// TestMemCountsOpenFilesAndUnsyncedCloses: OpenFiles counts what is open,
// and UnsyncedCloses names a file closed while a write or truncation made
// through it was not yet covered by a Sync through any descriptor.
func TestMemCountsOpenFilesAndUnsyncedCloses(t *testing.T) {
	m := NewMem()
	a, err := m.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	b, err := m.OpenFile("a", os.O_RDWR, 0)
	require.NoError(t, err)
	r, err := m.OpenFile("a", os.O_RDONLY, 0)
	require.NoError(t, err)
	require.Equal(t, 3, m.OpenFiles())

	_, err = a.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, b.Sync()) // another descriptor's sync covers a's write
	require.NoError(t, a.Close())
	require.NoError(t, r.Close()) // wrote nothing
	require.Empty(t, m.UnsyncedCloses())

	require.NoError(t, b.Truncate(0))
	require.NoError(t, b.Close())
	require.Equal(t, []string{"a"}, m.UnsyncedCloses())
	require.Zero(t, m.OpenFiles())
	require.Error(t, b.Close())
	require.Zero(t, m.OpenFiles(), "a second close counts nothing")
}
