package vfs

import (
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func isSegment(name string) bool { return strings.HasSuffix(name, ".log") }

// appendRecords writes n records of "rec" to name, one Write each, and
// returns how many succeeded and the first error.
func appendRecords(fsys FS, name string, n int) (int, error) {
	f, err := fsys.OpenFile(name, rw, 0o644)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	for i := range n {
		if _, err := f.Write([]byte("rec")); err != nil {
			return i, err
		}
	}
	return n, nil
}

func TestErrorsDiskFullAfterK(t *testing.T) {
	e := NewErrors(NewMem())
	r := e.InjectWrite(isSegment, syscall.ENOSPC, 2)

	ok, err := appendRecords(e, "0.log", 5)
	require.Equal(t, 2, ok)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Equal(t, "recrec", contents(t, e, "0.log"))

	_, err = appendRecords(e, "1.log", 1)
	require.ErrorIs(t, err, syscall.ENOSPC, "later writes fail too")
	require.Equal(t, 4, r.Count())

	ok, err = appendRecords(e, "0.index", 3)
	require.NoError(t, err, "names the rule does not match pass")
	require.Equal(t, 3, ok)
}

func TestErrorsSweepEveryWrite(t *testing.T) {
	probe := NewErrors(NewMem())
	_, err := appendRecords(probe, "0.log", 6)
	require.NoError(t, err)
	total := probe.Count(OpWrite)
	require.Equal(t, 6, total)

	for k := range total {
		e := NewErrors(NewMem())
		e.InjectWrite(nil, syscall.EIO, k)
		ok, err := appendRecords(e, "0.log", 6)
		require.ErrorIs(t, err, syscall.EIO)
		require.Equal(t, k, ok)
		require.Equal(t, strings.Repeat("rec", k), contents(t, e, "0.log"))
	}
}

func TestErrorsShortWrite(t *testing.T) {
	e := NewErrors(NewMem())
	e.ShortWrite(isSegment, 2, 1)
	f, err := e.OpenFile("0.log", rw, 0o644)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()

	n, err := f.Write([]byte("abc"))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = f.Write([]byte("def"))
	require.ErrorIs(t, err, io.ErrShortWrite)
	require.Equal(t, 2, n)
	n, err = f.Write([]byte("ghi")) // one-shot; the offset moved by 2
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, "abcdeghi", contents(t, e, "0.log"))

	e.ShortWrite(nil, 1, 0)
	n, err = f.WriteAt([]byte("XY"), 0)
	require.ErrorIs(t, err, io.ErrShortWrite)
	require.Equal(t, 1, n)
	require.Equal(t, "Xbcdeghi", contents(t, e, "0.log"))
}

func TestErrorsSyncFails(t *testing.T) {
	m := NewMem()
	e := NewErrors(m)
	e.InjectSync(nil, syscall.EIO, 1)
	f := write(t, e, "f", "one", true) // first sync passes
	_, err := f.Write([]byte("two"))
	require.NoError(t, err)
	require.ErrorIs(t, f.Sync(), syscall.EIO)
	require.ErrorIs(t, e.SyncDir("/"), syscall.EIO)
	require.NoError(t, f.Close())

	requireMissing(t, m.Crash(), "f") // the directory sync failed
	require.NoError(t, m.SyncDir("/"))
	require.Equal(t, "one", contents(t, m.Crash(), "f"), "failed sync reached nothing")
}

func TestErrorsClear(t *testing.T) {
	e := NewErrors(NewMem())
	e.InjectWrite(nil, syscall.ENOSPC, 0)
	_, err := appendRecords(e, "0.log", 1)
	require.ErrorIs(t, err, syscall.ENOSPC)
	e.Clear()
	_, err = appendRecords(e, "0.log", 2)
	require.NoError(t, err)
	require.Equal(t, 3, e.Count(OpWrite))
}

func TestErrorsMetadataAndReads(t *testing.T) {
	e := NewErrors(NewMem())
	write(t, e, "meta.tmp", "v", false)
	e.Inject(OpRename, func(n string) bool { return n == "meta" }, syscall.EIO, 0)
	e.Inject(OpOpen|OpMkdir|OpRemove|OpTruncate, nil, syscall.ENOSPC, 0)

	err := e.Rename("meta.tmp", "meta")
	require.ErrorIs(t, err, syscall.EIO)
	var le *os.LinkError
	require.ErrorAs(t, err, &le)
	_, err = e.OpenFile("new", rw, 0o644)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.ErrorIs(t, e.MkdirAll("d", 0o755), syscall.ENOSPC)
	require.ErrorIs(t, e.Remove("meta.tmp"), syscall.ENOSPC)
	require.ErrorIs(t, e.RemoveAll("meta.tmp"), syscall.ENOSPC)
	e.Clear()

	f, err := e.OpenFile("meta.tmp", os.O_RDWR, 0)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	e.Inject(OpRead, nil, syscall.EIO, 1)
	e.Inject(OpTruncate, nil, syscall.ENOSPC, 0)
	require.ErrorIs(t, f.Truncate(10), syscall.ENOSPC)
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.NoError(t, err)
	_, err = f.ReadAt(make([]byte, 1), 0)
	require.ErrorIs(t, err, syscall.EIO)
	require.Equal(t, 2, e.Count(OpRead))
	require.Equal(t, 3, e.Count(OpRead|OpTruncate))
}

func TestErrorsEarliestRuleDecides(t *testing.T) {
	e := NewErrors(NewMem())
	counter := e.Inject(OpWrite, nil, nil, 0)
	e.InjectWrite(nil, syscall.EIO, 1)
	late := e.InjectWrite(nil, syscall.ENOSPC, 0)
	f, err := e.OpenFile("f", rw, 0o644)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()

	_, err = f.Write([]byte("x")) // only the later rule is due yet
	require.ErrorIs(t, err, syscall.ENOSPC)
	_, err = f.Write([]byte("x")) // both are due: the earlier decides
	require.ErrorIs(t, err, syscall.EIO)
	require.False(t, errors.Is(err, syscall.ENOSPC))
	require.Equal(t, 2, counter.Count())
	require.Equal(t, 2, late.Count())
}
