package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// mode configures a test log as plain or encrypted (forEachMode).
type mode func(*DiskConfig)

// and is m after f.
func (m mode) and(f func(*DiskConfig)) func(*DiskConfig) {
	return func(c *DiskConfig) { f(c); m(c) }
}

// forEachMode runs test on a plain log and on an encrypted one, whose
// keyring lasts the subtest, so that reopening the log finds its key: the
// recovery and corruption tests hold for both.
func forEachMode(t *testing.T, test func(t *testing.T, m mode)) {
	t.Run("plain", func(t *testing.T) { test(t, func(*DiskConfig) {}) })
	t.Run("encrypted", func(t *testing.T) {
		kr := testKeyring(t, 1)
		test(t, func(c *DiskConfig) { c.Keys = kr })
	})
}

// testKeyring holds random data keys ids, the last current.
func testKeyring(t testing.TB, ids ...uint32) *crypt.Keyring {
	kr := crypt.NewKeyring()
	for _, id := range ids {
		require.NoError(t, kr.Add(id, crypt.NewDataKey(), true))
	}
	return kr
}

// secretBatch is a batch of n records at base whose values are
// "secret-payload-<offset>", easy to look for in the files.
func secretBatch(base int64, n int) wire.Batch {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	for i := range n {
		bb.Append(1, nil, fmt.Appendf(nil, "secret-payload-%d", base+int64(i)), nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	return b
}

// readBatches returns every visible batch from 0, copied.
func readBatches(t testing.TB, l *DiskLog) []wire.Batch {
	var out []wire.Batch
	require.NoError(t, l.Read(0, 1<<30, func(b wire.Batch) bool {
		out = append(out, append(wire.Batch(nil), b...))
		return true
	}))
	return out
}

// TestEncryptedRoundTrip writes an encrypted log through the buffered
// path (memory) and the direct-I/O path (the OS file system, where it
// allows O_DIRECT), and reads back exactly the batches written, served
// plain (CheckBatch passes: the CRC is the producer's), after a clean and
// after an unclean reopen; the files never hold the plaintext.
func TestEncryptedRoundTrip(t *testing.T) {
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			var fsys vfs.FS = vfs.NewMem()
			dir := "t/0"
			if fsName == "os" {
				fsys, dir = vfs.Default(), t.TempDir()+"/t/0"
			}
			kr := testKeyring(t, 7)
			cfg := DiskConfig{FS: fsys, Dir: dir, SegmentBytes: 16 << 10, IndexInterval: 512, Keys: kr, Logger: quiet}
			l, _, err := OpenDiskLog(cfg)
			require.NoError(t, err)
			var want []wire.Batch
			for end := int64(0); end < 2000; {
				n := 1 + int(end%9)
				b := secretBatch(end, n)
				want = append(want, append(wire.Batch(nil), b...))
				require.NoError(t, l.Append(nil, b))
				end += int64(n)
				l.SetVisible(end)
			}
			require.Greater(t, l.Stats().Segments, 3)
			require.Equal(t, want, readBatches(t, l))
			_, err = l.Sync()
			require.NoError(t, err)

			for _, clean := range []bool{false, true} {
				if clean {
					require.NoError(t, l.Close())
				}
				l2, rec, err := OpenDiskLog(cfg)
				require.NoError(t, err)
				require.Equal(t, clean, rec.Clean)
				require.Empty(t, rec.Corrupt)
				got := readBatches(t, l2)
				require.Equal(t, want, got)
				for _, b := range got {
					_, err := wire.CheckBatch(b, 1<<20, 1<<20)
					require.NoError(t, err)
				}
				if !clean {
					require.NoError(t, l2.Close())
				} else {
					l = l2
				}
			}
			require.NoError(t, l.Close())

			files, err := fsys.ReadDir(dir)
			require.NoError(t, err)
			for _, f := range files {
				b, err := ReadFile(fsys, dir+"/"+f.Name())
				require.NoError(t, err)
				require.False(t, bytes.Contains(b, []byte("secret-payload")), "%s holds plaintext", f.Name())
			}
		})
	}
}

// TestPlainLogFilesHoldPlaintext is the control of the test above: the
// same search finds the values in a plain log, so it can fail.
func TestPlainLogFilesHoldPlaintext(t *testing.T) {
	fsys := vfs.NewMem()
	l, _ := openLog(t, fsys, nil)
	require.NoError(t, l.Append(nil, secretBatch(0, 3)))
	require.NoError(t, l.Close())
	b, err := ReadFile(fsys, "t/0/"+segmentName(0, logSuffix))
	require.NoError(t, err)
	require.True(t, bytes.Contains(b, []byte("secret-payload-1")))
}

// TestRotationKeepsOldBatchesReadable: after a new data key becomes
// current, new batches are sealed with it and the old ones still read,
// after a restart too; a keyring without the old key refuses to open
// the log, naming the key, instead of serving or cutting anything.
func TestRotationKeepsOldBatchesReadable(t *testing.T) {
	fsys := vfs.NewMem()
	k1 := crypt.NewDataKey()
	kr := crypt.NewKeyring()
	require.NoError(t, kr.Add(1, k1, true))
	mut := func(c *DiskConfig) { c.Keys = kr }
	l, _ := openLog(t, fsys, mut)
	mid := appendN(t, l, 500, 1)
	require.NoError(t, kr.Add(2, crypt.NewDataKey(), true))
	end := appendN(t, l, 1000, 1)
	require.Equal(t, expected(0, end), readAll(t, l, 0))
	require.NoError(t, l.Close())

	keyIDs := map[uint32]int{}
	for _, seg := range segmentFiles(t, fsys, "t/0") {
		for _, b := range segmentBatches(t, fsys, seg) {
			hdr := make([]byte, sealedBody)
			f, err := fsys.OpenFile(seg, os.O_RDONLY, 0)
			require.NoError(t, err)
			_, err = f.ReadAt(hdr, b.pos)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.True(t, isSealed(hdr))
			id := sealedKeyID(hdr)
			keyIDs[id]++
			require.Equal(t, b.base < mid, id == 1, "batch %d sealed with key %d", b.base, id)
		}
	}
	require.Len(t, keyIDs, 2)

	for _, clean := range []bool{true, false} {
		if !clean {
			require.NoError(t, fsys.Remove("t/0/"+cleanMarker))
		}
		l2, _ := openLog(t, fsys, mut)
		require.Equal(t, expected(0, end), readAll(t, l2, 0), "clean=%v", clean)
		require.NoError(t, l2.Close())
	}

	only2 := crypt.NewKeyring()
	k2, _ := kr.Key(2)
	require.NoError(t, only2.Add(2, k2, true))
	_, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 4096, IndexInterval: 256, Keys: only2, Logger: quiet})
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorContains(t, err, "key id 1")
}

// segmentFiles lists a partition directory's .log files.
func segmentFiles(t *testing.T, fsys vfs.FS, dir string) []string {
	entries, err := fsys.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if filepath.Ext(e.Name()) == logSuffix {
			out = append(out, dir+"/"+e.Name())
		}
	}
	return out
}

// TestEncryptedLogOpenedWithoutKeysFails: an encrypted log opened as a
// plain one (a topic whose record lost its encryption) fails to open
// with a clear error, after a clean shutdown and after a crash (where
// the recovery scan would otherwise take the sealed batches for a torn
// tail and cut them); the data is still there for the right keys.
func TestEncryptedLogOpenedWithoutKeysFails(t *testing.T) {
	for _, clean := range []bool{true, false} {
		fsys := vfs.NewMem()
		kr := testKeyring(t, 1)
		l, _ := openLog(t, fsys, func(c *DiskConfig) { c.Keys = kr })
		end := appendN(t, l, 300, 1)
		require.NoError(t, l.Close())
		if !clean {
			require.NoError(t, fsys.Remove("t/0/"+cleanMarker))
		}
		_, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 4096, IndexInterval: 256, Logger: quiet})
		require.ErrorIs(t, err, ErrSealedWithoutKeys, "clean=%v", clean)

		// Another key under the same id (what the wrapped keys' own
		// authentication rules out in a broker) serves nothing: every
		// batch fails authentication and is reported.
		wrong, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 4096, IndexInterval: 256,
			Keys: testKeyring(t, 1), Logger: quiet})
		require.NoError(t, err)
		require.Empty(t, readAll(t, wrong, 0))
		require.NotEmpty(t, wrong.Stats().Corrupt)
		require.NoError(t, wrong.Close())

		l2, _ := openLog(t, fsys, func(c *DiskConfig) { c.Keys = kr })
		require.Equal(t, expected(0, end), readAll(t, l2, 0))
		require.NoError(t, l2.Close())
	}
}

// TestTamperedCiphertextIsDetected alters one byte of a sealed batch's
// records, or of its clear header fields, and fixes its CRC, as an
// attacker would: the read reports the batch corrupt (failed
// authentication), serves the batches around it, and never the altered
// one.
func TestTamperedCiphertextIsDetected(t *testing.T) {
	targets := map[string]func(b batchAt) int64{
		"ciphertext":      func(b batchAt) int64 { return b.pos + sealedBody + 3 },
		"tag":             func(b batchAt) int64 { return b.pos + b.size - 1 },
		"max timestamp":   func(b batchAt) int64 { return b.pos + 39 },
		"producer id":     func(b batchAt) int64 { return b.pos + 47 },
		"nonce counter":   func(b batchAt) int64 { return b.pos + wire.BatchHeaderSize + 31 },
		"control: none":   func(b batchAt) int64 { return -1 },
		"salt":            func(b batchAt) int64 { return b.pos + wire.BatchHeaderSize + 9 },
		"seal version":    func(b batchAt) int64 { return b.pos + wire.BatchHeaderSize },
		"first timestamp": func(b batchAt) int64 { return b.pos + 24 },
	}
	for name, at := range targets {
		t.Run(name, func(t *testing.T) {
			fsys := vfs.NewMem()
			kr := testKeyring(t, 1)
			cfg := func(c *DiskConfig) { c.Keys = kr; c.SegmentBytes = 1 << 20 }
			l, _ := openLog(t, fsys, cfg)
			end := appendN(t, l, 300, 1)
			path := l.active.path
			require.NoError(t, l.Close())

			bs := segmentBatches(t, fsys, path)
			i := len(bs) / 2
			bad := Range{bs[i].base, bs[i].base + int64(bs[i].count)}
			pos := at(bs[i])
			if pos >= 0 {
				f, err := fsys.OpenFile(path, os.O_RDWR, 0)
				require.NoError(t, err)
				batch := make([]byte, bs[i].size)
				_, err = f.ReadAt(batch, bs[i].pos)
				require.NoError(t, err)
				batch[pos-bs[i].pos] ^= 0x01
				binary.BigEndian.PutUint32(batch[crcOff:], crc32.Checksum(batch[20:], castagnoli))
				_, err = f.WriteAt(batch, bs[i].pos)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			}

			l2, rec := openLog(t, fsys, cfg)
			require.Empty(t, rec.Corrupt, "the CRC matches: recovery cannot tell")
			vals := readAll(t, l2, 0)
			if pos < 0 {
				require.Equal(t, expected(0, end), vals)
				require.Empty(t, l2.Stats().Corrupt)
				return
			}
			require.Equal(t, append(expected(0, bad.From), expected(bad.To, end)...), vals)
			require.Equal(t, []Range{bad}, l2.Stats().Corrupt, "the altered batch is reported")
			require.NoError(t, l2.Close())
		})
	}
}

// TestSealProperty: for any batch, any key and any position, a sealed
// batch passes the stored checks and opens to exactly the batch sealed;
// and any one byte altered anywhere in it, with or without its CRC fixed
// up, makes it fail a check or fail to open: it never opens to anything.
func TestSealProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		var bb wire.BatchBuilder
		bb.Start(nil, rapid.Int64().Draw(rt, "producer"), rapid.Int32().Draw(rt, "seq"))
		for i := range rapid.IntRange(1, 20).Draw(rt, "records") {
			key := rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(rt, fmt.Sprint("key", i))
			val := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(rt, fmt.Sprint("value", i))
			bb.Append(rapid.Int64Range(0, 1<<40).Draw(rt, fmt.Sprint("ts", i)), key, val, nil)
		}
		b := wire.Batch(bb.Finish())
		b.SetBaseOffset(rapid.Int64Range(0, 1<<50).Draw(rt, "base"))
		kr := crypt.NewKeyring()
		id := rapid.Uint32().Draw(rt, "key id")
		if err := kr.Add(id, crypt.NewDataKey(), true); err != nil {
			rt.Fatal(err)
		}
		w := &sealer{keys: kr}
		seg := &segment{}
		if err := w.begin(seg); err != nil {
			rt.Fatal(err)
		}
		w.n = rapid.Uint64().Draw(rt, "counter")
		sealed := w.group([]wire.Batch{b})
		if len(sealed) != len(b)+sealOverhead || wire.BatchSize(sealed) != len(sealed) {
			rt.Fatalf("sealed size %d for %d", len(sealed), len(b))
		}
		if bytes.Contains(sealed, b[wire.BatchHeaderSize:]) && len(b) > wire.BatchHeaderSize+16 {
			rt.Fatal("the records are in the clear")
		}
		if err := checkStoredBatch(sealed); err != nil {
			rt.Fatal(err)
		}
		o := &opener{keys: kr}
		var plain []byte
		var st openState
		got, err := o.open(&st, &plain, sealed)
		if err != nil || !bytes.Equal(got, b) {
			rt.Fatalf("open: %v, equal %v", err, bytes.Equal(got, b))
		}

		at := rapid.IntRange(0, len(sealed)-1).Draw(rt, "altered byte")
		if at >= crcOff && at < crcOff+4 {
			at = 0 // the CRC itself: altering it is the "not fixed up" case below
		}
		flip := rapid.ByteRange(1, 255).Draw(rt, "xor")
		fix := rapid.Bool().Draw(rt, "fix crc")
		bad := append([]byte(nil), sealed...)
		bad[at] ^= flip
		if fix {
			binary.BigEndian.PutUint32(bad[crcOff:], crc32.Checksum(bad[20:], castagnoli))
		}
		if checkStoredBatch(bad) != nil {
			return
		}
		if !isSealed(bad) {
			return // a batch in the clear: an encrypted log's reads refuse it (DiskLog.opened)
		}
		var p2 []byte
		if _, err := o.open(&st, &p2, bad); err == nil {
			rt.Fatalf("byte %d altered (xor %#x, crc fixed %v) and the batch still opened", at, flip, fix)
		}
	})
}
