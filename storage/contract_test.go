package storage_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/logtest"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The contract suite (package logtest) run unchanged on each log: the
// memory log; the disk log on a memory file system, which can crash, with
// a budget of one open segment file and no Reclaimer, so that readers
// reopen files that retention unlinks; the same encrypted at rest, and
// configured otherwise as the broker configures a partition's log (a
// block cache, a Reclaimer, a shared file budget); and, for the table of
// cases only, the disk log on the real file system, configured so too.

func TestContractMemLog(t *testing.T) {
	logtest.Run(t, logtest.Impl{
		Name: "memory",
		New: func(testing.TB) logtest.Subject {
			return &memSubject{log: storage.NewMemLog(memLogBound)}
		},
		ExactRetention: true,
	})
}

func TestContractDiskLog(t *testing.T) {
	logtest.Run(t, logtest.Impl{
		Name: "disk",
		New: func(t testing.TB) logtest.Subject {
			mem := vfs.NewMem()
			cfg := contractDiskConfig(mem, "topic/0")
			cfg.Files = storage.NewFileCache(1)
			s := &crashDiskSubject{diskSubject: diskSubject{cfg: cfg}, mem: mem}
			s.open(t)
			return s
		},
		Durable:       true,
		CanCorrupt:    true,
		RetentionUnit: contractSegmentBytes,
	})
}

func TestContractDiskLogEncrypted(t *testing.T) {
	keys := crypt.NewKeyring()
	require.NoError(t, keys.Add(1, crypt.NewDataKey(), true))
	overhead := sealOverhead(t, keys)
	logtest.Run(t, logtest.Impl{
		Name: "encrypted disk",
		New: func(t testing.TB) logtest.Subject {
			mem := vfs.NewMem()
			cache, err := storage.NewBlockCache(1 << 20)
			require.NoError(t, err)
			cfg := contractDiskConfig(mem, "topic/0")
			cfg.Keys, cfg.Cache, cfg.Files = keys, cache, storage.NewFileCache(4)
			s := &crashDiskSubject{diskSubject: diskSubject{cfg: cfg}, mem: mem, trash: "trash"}
			s.reclaimer(t)
			s.open(t)
			return s
		},
		Durable:       true,
		CanCorrupt:    true,
		RetentionUnit: contractSegmentBytes,
		StoredBytes:   func(b wire.Batch) int64 { return int64(len(b)) + overhead },
	})
}

// sealOverhead measures what sealing adds to a batch in an encrypted log
// (Stats().Bytes counts batches as stored).
func sealOverhead(t *testing.T, keys *crypt.Keyring) int64 {
	cfg := contractDiskConfig(vfs.NewMem(), "probe/0")
	cfg.Keys = keys
	l, _, err := storage.OpenDiskLog(cfg)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	bb.Append(1, nil, []byte("probe"), nil)
	b := wire.Batch(bb.Finish())
	require.NoError(t, l.Append(nil, b))
	return l.Stats().Bytes - int64(len(b))
}

func TestContractDiskLogOS(t *testing.T) {
	logtest.Run(t, logtest.Impl{
		Name: "disk on the OS file system",
		New: func(t testing.TB) logtest.Subject {
			root := t.TempDir()
			cache, err := storage.NewBlockCache(1 << 20)
			require.NoError(t, err)
			rc, err := storage.NewReclaimer(vfs.Default(), path.Join(root, "trash"), quietLog)
			require.NoError(t, err)
			cfg := contractDiskConfig(vfs.Default(), path.Join(root, "topic", "0"))
			cfg.Cache, cfg.Reclaim, cfg.Files = cache, rc, storage.NewFileCache(4)
			s := &diskSubject{cfg: cfg}
			s.open(t)
			return s
		},
		Durable:       true,
		CanCorrupt:    true,
		RetentionUnit: contractSegmentBytes,
		CasesOnly:     true, // an fsync a step; the properties run on the memory file system
	})
}

// memLogBound is the memory log's own bound: far above what the suite
// appends, so that only Retain removes batches.
const memLogBound = 1 << 40

// contractSegmentBytes is small, so that the suite's logs have many
// segments and retention has whole ones to delete.
const contractSegmentBytes = 2 << 10

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func contractDiskConfig(fsys vfs.FS, dir string) storage.DiskConfig {
	return storage.DiskConfig{FS: fsys, Dir: dir, SegmentBytes: contractSegmentBytes, IndexInterval: 256,
		Logger: quietLog}
}

// memSubject is a memory log: nothing survives a restart, nothing is
// stored to damage.
type memSubject struct{ log *storage.MemLog }

func (s *memSubject) Log() storage.Log { return s.log }

func (s *memSubject) Restart(t testing.TB) storage.Log {
	require.NoError(t, s.log.Close())
	s.log = storage.NewMemLog(memLogBound)
	return s.log
}

func (s *memSubject) Corrupt(t testing.TB, _ int64) {
	t.Fatal("a memory log keeps no stored bytes to damage")
}

func (s *memSubject) Close(t testing.TB) { require.NoError(t, s.log.Close()) }

// diskSubject is a disk log in a directory of its file system.
type diskSubject struct {
	cfg storage.DiskConfig
	log *storage.DiskLog
}

var _ logtest.Reopener = (*diskSubject)(nil)

func (s *diskSubject) open(t testing.TB) storage.Log {
	t.Helper()
	l, _, err := storage.OpenDiskLog(s.cfg)
	require.NoError(t, err)
	s.log = l
	return l
}

func (s *diskSubject) Log() storage.Log { return s.log }

func (s *diskSubject) Restart(t testing.TB) storage.Log {
	require.NoError(t, s.log.Close())
	return s.open(t)
}

func (s *diskSubject) Reopen(t testing.TB) storage.Log { return s.open(t) }

func (s *diskSubject) Close(t testing.TB) {
	require.NoError(t, s.log.Close())
	s.cfg.Cache.Close()
	if s.cfg.Reclaim != nil {
		s.cfg.Reclaim.Close()
	}
}

// Corrupt flips a bit in the records of the batch at base, which its CRC
// covers, in the segment file that holds it.
func (s *diskSubject) Corrupt(t testing.TB, base int64) {
	t.Helper()
	fsys := s.cfg.FS
	entries, err := fsys.ReadDir(s.cfg.Dir)
	require.NoError(t, err)
	var segs []int64
	for _, e := range entries {
		if b, ok := segmentBase(e.Name()); ok {
			segs = append(segs, b)
		}
	}
	slices.Sort(segs)
	i, _ := slices.BinarySearch(segs, base+1)
	require.Positive(t, i, "no segment holds offset %d", base)
	name := path.Join(s.cfg.Dir, segmentFile(segs[i-1]))
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	st, err := f.Stat()
	require.NoError(t, err)
	data := make([]byte, st.Size())
	_, err = f.ReadAt(data, 0)
	require.NoError(t, err)
	for pos := 0; pos+wire.BatchHeaderSize <= len(data); {
		size := wire.BatchSize(data[pos:])
		if size < wire.BatchHeaderSize || pos+size > len(data) {
			break
		}
		if wire.Batch(data[pos:]).BaseOffset() == base {
			at := int64(pos + wire.BatchHeaderSize + (size-wire.BatchHeaderSize)/2)
			_, err := f.WriteAt([]byte{data[at] ^ 0x10}, at)
			require.NoError(t, err)
			require.NoError(t, f.Sync())
			return
		}
		pos += size
	}
	t.Fatalf("no batch at %d in %s", base, name)
}

// segmentBase parses a segment file's name (see segment.go): its base
// offset in 20 digits, then ".log".
func segmentBase(name string) (int64, bool) {
	s, ok := strings.CutSuffix(name, ".log")
	if !ok || len(s) != 20 {
		return 0, false
	}
	b, err := strconv.ParseInt(s, 10, 64)
	return b, err == nil
}

func segmentFile(base int64) string { return fmt.Sprintf("%020d.log", base) }

// crashDiskSubject is a disk log on a memory file system, which can crash.
type crashDiskSubject struct {
	diskSubject
	mem   *vfs.MemFS
	trash string // the Reclaimer's directory; "": no Reclaimer
}

var _ logtest.Crasher = (*crashDiskSubject)(nil)

// reclaimer starts the log's Reclaimer on the current file system, if it
// has one.
func (s *crashDiskSubject) reclaimer(t testing.TB) {
	if s.trash == "" {
		return
	}
	if s.cfg.Reclaim != nil {
		s.cfg.Reclaim.Close()
	}
	rc, err := storage.NewReclaimer(s.mem, s.trash, quietLog)
	require.NoError(t, err)
	s.cfg.Reclaim = rc
}

// Crash abandons the log and reopens it from what the file system had
// made durable, with a Reclaimer on that file system.
func (s *crashDiskSubject) Crash(t testing.TB) storage.Log {
	s.mem = s.mem.Crash()
	s.cfg.FS = s.mem
	s.reclaimer(t)
	return s.open(t)
}
