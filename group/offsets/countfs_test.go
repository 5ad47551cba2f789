package offsets

import (
	"io/fs"
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// countFS wraps an FS and records the bytes written to each file name and
// the syncs of files and directories, so tests and benchmarks can see
// what a change cost on disk.
type countFS struct {
	vfs.FS

	mu      sync.Mutex
	written map[string]int64
	syncs   int
}

func newCountFS(inner vfs.FS) *countFS {
	return &countFS{FS: inner, written: map[string]int64{}}
}

// reset forgets what was counted.
func (c *countFS) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written, c.syncs = map[string]int64{}, 0
}

// snapshot returns the bytes written per name, their total and the syncs.
func (c *countFS) snapshot() (map[string]int64, int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.written))
	var total int64
	for k, v := range c.written {
		out[k] = v
		total += v
	}
	return out, total, c.syncs
}

func (c *countFS) note(name string, n int, sync bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written[name] += int64(n)
	if sync {
		c.syncs++
	}
}

func (c *countFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &countFile{File: f, c: c, name: name}, nil
}

func (c *countFS) SyncDir(name string) error {
	c.note(name, 0, true)
	return c.FS.SyncDir(name)
}

type countFile struct {
	vfs.File
	c    *countFS
	name string
}

func (f *countFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.c.note(f.name, n, false)
	return n, err
}

func (f *countFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	f.c.note(f.name, n, false)
	return n, err
}

func (f *countFile) Sync() error {
	f.c.note(f.name, 0, true)
	return f.File.Sync()
}
