package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// replicaLog is one replica's log of one partition, read from a copy of
// its directory after the node stopped: the batches up to the end of the
// Raft entry the node last reported committed (commit), and how many
// records it holds past that (not committed when it was asked; they may
// be cut by a leader, so they are not checked).
type replicaLog struct {
	start   int64 // where the log starts (retention removed what was before)
	records []checker.Record
	tail    int
	corrupt []storage.Range
}

// readReplica reads the partition log in dir (a Raft group's directory,
// data/cluster/groups/<group>) through a copy made at cp, so the node's
// own files stay as they were. commit is the Raft index the node reported
// committed; 0 takes the one its meta file holds (saved lazily: possibly
// less).
func readReplica(dir, cp string, commit uint64) (replicaLog, error) {
	var out replicaLog
	if err := os.CopyFS(cp, os.DirFS(dir)); err != nil {
		return out, fmt.Errorf("copy %s: %w", dir, err)
	}
	l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: vfs.Default(), Dir: cp,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return out, fmt.Errorf("open %s: %w", dir, err)
	}
	defer func() { _ = l.Close() }()
	st, err := raftlog.Open(l, raftlog.SideMeta{L: l})
	if err != nil {
		return out, fmt.Errorf("open the Raft log of %s: %w", dir, err)
	}
	start, committed := l.Bounds() // Open made the saved commit visible
	if last, _ := st.LastIndex(); commit > 0 {
		committed = st.OffsetEnd(min(commit, last))
	}
	end := st.EndOffset()
	l.SetVisible(end)
	out.corrupt = l.Stats().Corrupt
	out.start = start
	err = scan(l, start, end, func(r checker.Record) {
		if r.Offset < committed {
			out.records = append(out.records, r)
		} else {
			out.tail++
		}
	})
	return out, err
}

// scan calls fn with every record of l from start to end, in order.
func scan(l storage.Log, start, end int64, fn func(checker.Record)) error {
	var dec wire.Decompressor
	next := start
	for next < end {
		before := next
		var ierr error
		err := l.Read(next, 4<<20, func(b wire.Batch) bool {
			it, err := dec.Records(b, wire.MaxBatchBytes)
			if err != nil {
				ierr = err
				return false
			}
			var r wire.Record
			for it.Next(&r) {
				if r.Offset >= next {
					fn(checker.Record{Offset: r.Offset, Value: string(r.Value)})
				}
			}
			if it.Err() != nil {
				ierr = it.Err()
				return false
			}
			next = b.BaseOffset() + int64(b.Count())
			return true
		})
		if err = errors.Join(err, ierr); err != nil {
			return fmt.Errorf("read at offset %d: %w", before, err)
		}
		if next == before {
			return fmt.Errorf("read at offset %d returned nothing before the end %d", next, end)
		}
	}
	return nil
}

// groupDir is where node n keeps the log of Raft group g.
func groupDir(n *node, g uint64) string {
	return filepath.Join(n.dataDir(), "cluster", "groups", strconv.FormatUint(g, 10))
}
