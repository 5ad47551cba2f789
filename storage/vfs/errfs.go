package vfs

import (
	"io"
	"io/fs"
	"math/bits"
	"os"
	"sync"
)

// Op is a set of kinds of operation, for the rules of an ErrorFS.
type Op uint

// The kinds of operation an ErrorFS can fail. Stat, ReadDir, Chmod, Seek,
// Name and Close always pass through.
const (
	OpRead     Op = 1 << iota // File.ReadAt
	OpWrite                   // File.Write and File.WriteAt
	OpSync                    // File.Sync and FS.SyncDir
	OpTruncate                // File.Truncate
	OpOpen                    // FS.OpenFile, with or without O_CREATE
	OpMkdir                   // FS.MkdirAll
	OpRename                  // FS.Rename
	OpRemove                  // FS.Remove and FS.RemoveAll

	numOps = iota
)

// ErrorFS wraps an FS and fails chosen operations, for tests of disk-full
// and I/O-error handling. Each rule, added with [ErrorFS.Inject] or a
// shorthand, names the kinds of operation it applies to, a predicate on
// the file name, an error, and how many matching operations to let
// through first; it then fails every later matching operation until
// [ErrorFS.Clear]. Failed operations do not reach the inner FS, so a
// failed write writes nothing and a failed Sync syncs nothing. (This is
// kinder than Linux, which may drop the dirty pages when writeback fails,
// so that a retried fsync succeeds without the data: code under test
// should treat a failed Sync as fatal for the file rather than retry.)
//
// Every rule that matches an operation counts it, whether or not the
// operation fails; if several rules would fail it, the earliest added
// decides. Injected errors are wrapped as package os wraps its own (in
// *fs.PathError, or *os.LinkError for Rename), so use syscall.ENOSPC for
// disk full and syscall.EIO for an I/O error and test with errors.Is.
//
// To fail "the k-th write" for every k, run the workload once to learn the
// number of writes from [ErrorFS.Count] or [Rule.Count], then once per k
// on a fresh file system with InjectWrite(match, err, k).
//
// An ErrorFS is safe for concurrent use if its inner FS is.
type ErrorFS struct {
	inner FS

	mu     sync.Mutex
	rules  []*Rule
	counts [numOps]int
}

// Rule is one fault-injection rule of an ErrorFS.
type Rule struct {
	fs    *ErrorFS
	ops   Op
	match func(name string) bool
	err   error
	after int
	short int // bytes a short write writes; -1 if not a short write

	seen  int  // matching operations, guarded by ErrorFS.mu
	spent bool // a short write has fired, guarded by ErrorFS.mu
}

var _ FS = (*ErrorFS)(nil)

// NewErrors returns an ErrorFS over inner with no rules.
func NewErrors(inner FS) *ErrorFS {
	return &ErrorFS{inner: inner}
}

// Inject adds a rule: the operations of the kinds in ops on a name for
// which match reports true (every name, if match is nil) succeed the
// first after times, then fail with err. A nil err makes a rule that
// only counts.
func (e *ErrorFS) Inject(ops Op, match func(name string) bool, err error, after int) *Rule {
	return e.add(&Rule{ops: ops, match: match, err: err, after: after, short: -1})
}

// InjectWrite is Inject(OpWrite, match, err, after): with err
// syscall.ENOSPC, the disk fills after after writes.
func (e *ErrorFS) InjectWrite(match func(name string) bool, err error, after int) *Rule {
	return e.Inject(OpWrite, match, err, after)
}

// InjectSync is Inject(OpSync, match, err, after), failing File.Sync and
// FS.SyncDir.
func (e *ErrorFS) InjectSync(match func(name string) bool, err error, after int) *Rule {
	return e.Inject(OpSync, match, err, after)
}

// ShortWrite adds a one-shot rule: after after matching writes pass, the
// next matching write writes only its first n bytes (all of them if it
// has fewer) and returns io.ErrShortWrite, as a full disk may. Later
// writes pass.
func (e *ErrorFS) ShortWrite(match func(name string) bool, n, after int) *Rule {
	return e.add(&Rule{ops: OpWrite, match: match, err: io.ErrShortWrite, after: after, short: max(n, 0)})
}

func (e *ErrorFS) add(r *Rule) *Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	r.fs = e
	e.rules = append(e.rules, r)
	return r
}

// Clear removes all rules; operations pass through again. Counts are
// kept.
func (e *ErrorFS) Clear() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rules = nil
}

// Count returns how many operations of the kinds in ops were attempted
// since NewErrors, including failed ones.
func (e *ErrorFS) Count(ops Op) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	total := 0
	for i, c := range e.counts {
		if ops&(1<<i) != 0 {
			total += c
		}
	}
	return total
}

// Count returns how many operations matched r, including failed ones.
func (r *Rule) Count() int {
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	return r.seen
}

func (r *Rule) matches(op Op, names []string) bool {
	if r.ops&op == 0 {
		return false
	}
	if r.match == nil {
		return true
	}
	for _, n := range names {
		if r.match(n) {
			return true
		}
	}
	return false
}

func (r *Rule) fires() bool {
	return r.err != nil && !r.spent && r.seen > r.after
}

// fault counts an operation of kind op on names and returns the rule that
// fails it, if any.
func (e *ErrorFS) fault(op Op, names ...string) *Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[bits.TrailingZeros(uint(op))]++
	var hit *Rule
	for _, r := range e.rules {
		if !r.matches(op, names) {
			continue
		}
		r.seen++
		if hit == nil && r.fires() {
			hit = r
		}
	}
	if hit != nil && hit.short >= 0 {
		hit.spent = true
	}
	return hit
}

// check is fault for operations that either fail whole or pass.
func (e *ErrorFS) check(op Op, opName, name string) error {
	if r := e.fault(op, name); r != nil {
		return &fs.PathError{Op: opName, Path: name, Err: r.err}
	}
	return nil
}

// OpenFile opens a file of the inner FS, wrapped so its operations are
// subject to the rules too.
func (e *ErrorFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if err := e.check(OpOpen, "open", name); err != nil {
		return nil, err
	}
	f, err := e.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, fs: e}, nil
}

// Remove is the inner Remove, subject to OpRemove rules.
func (e *ErrorFS) Remove(name string) error {
	if err := e.check(OpRemove, "remove", name); err != nil {
		return err
	}
	return e.inner.Remove(name)
}

// RemoveAll is the inner RemoveAll, subject to OpRemove rules.
func (e *ErrorFS) RemoveAll(name string) error {
	if err := e.check(OpRemove, "unlinkat", name); err != nil {
		return err
	}
	return e.inner.RemoveAll(name)
}

// Rename is the inner Rename, subject to OpRename rules matching either
// name.
func (e *ErrorFS) Rename(oldname, newname string) error {
	if r := e.fault(OpRename, oldname, newname); r != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: r.err}
	}
	return e.inner.Rename(oldname, newname)
}

// MkdirAll is the inner MkdirAll, subject to OpMkdir rules.
func (e *ErrorFS) MkdirAll(name string, perm fs.FileMode) error {
	if err := e.check(OpMkdir, "mkdir", name); err != nil {
		return err
	}
	return e.inner.MkdirAll(name, perm)
}

// ReadDir is the inner ReadDir.
func (e *ErrorFS) ReadDir(name string) ([]fs.DirEntry, error) { return e.inner.ReadDir(name) }

// Stat is the inner Stat.
func (e *ErrorFS) Stat(name string) (fs.FileInfo, error) { return e.inner.Stat(name) }

// Chmod is the inner Chmod.
func (e *ErrorFS) Chmod(name string, mode fs.FileMode) error { return e.inner.Chmod(name, mode) }

// SyncDir is the inner SyncDir, subject to OpSync rules.
func (e *ErrorFS) SyncDir(name string) error {
	if err := e.check(OpSync, "sync", name); err != nil {
		return err
	}
	return e.inner.SyncDir(name)
}

// errFile is a File of an ErrorFS. Seek, Close, Stat and Name pass
// through the embedded File.
type errFile struct {
	File
	fs *ErrorFS
}

func (f *errFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.check(OpRead, "read", f.Name()); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *errFile) WriteAt(p []byte, off int64) (int, error) {
	return f.write(p, func(p []byte) (int, error) { return f.File.WriteAt(p, off) })
}

func (f *errFile) Write(p []byte) (int, error) {
	return f.write(p, f.File.Write)
}

// write applies the OpWrite rules to writing p with do.
func (f *errFile) write(p []byte, do func([]byte) (int, error)) (int, error) {
	r := f.fs.fault(OpWrite, f.Name())
	switch {
	case r == nil:
		return do(p)
	case r.short < 0:
		return 0, &fs.PathError{Op: "write", Path: f.Name(), Err: r.err}
	}
	n, err := do(p[:min(r.short, len(p))])
	if err == nil {
		err = io.ErrShortWrite
	}
	return n, err
}

func (f *errFile) Sync() error {
	if err := f.fs.check(OpSync, "sync", f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *errFile) Truncate(size int64) error {
	if err := f.fs.check(OpTruncate, "truncate", f.Name()); err != nil {
		return err
	}
	return f.File.Truncate(size)
}
