package storage

import (
	"fmt"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// OfflineLog stands in for a partition's log that could not be opened at
// start (a permission denied, an unreadable segment, an I/O error during
// recovery). The broker starts anyway with the partition offline, so one
// bad directory does not stop every other topic. It holds nothing, refuses
// every append and read with ErrOffline, and reports empty bounds, so the
// code around a partition needs no nil checks. A restart that opens the
// log is the only way back online: nothing is written to the directory
// meanwhile, so what an operator repairs is left as they left it.
type OfflineLog struct {
	reason string
	err    error
}

var _ Truncater = (*OfflineLog)(nil)

// NewOfflineLog returns a log that refuses everything because of cause.
func NewOfflineLog(cause error) *OfflineLog {
	reason := cause.Error()
	return &OfflineLog{reason: reason, err: fmt.Errorf("%w: %s", ErrOffline, reason)}
}

// Reason says why the log could not be opened.
func (l *OfflineLog) Reason() string { return l.reason }

// Append refuses the batch.
func (l *OfflineLog) Append(*Buf, wire.Batch) error { return l.err }

// Sync has nothing to sync: nothing was appended.
func (l *OfflineLog) Sync() (int64, error) { return 0, nil }

// SetVisible ignores end: nothing is ever appended.
func (l *OfflineLog) SetVisible(int64) {}

// Bounds is an empty log at offset 0.
func (l *OfflineLog) Bounds() (int64, int64) { return 0, 0 }

// Read refuses the read.
func (l *OfflineLog) Read(int64, int, func(wire.Batch) bool) error { return l.err }

// OffsetForTime refuses the lookup.
func (l *OfflineLog) OffsetForTime(int64) (int64, error) { return 0, l.err }

// Truncate refuses the cut.
func (l *OfflineLog) Truncate(int64) error { return l.err }

// Retain has nothing to remove: the data on disk is left for the operator.
func (l *OfflineLog) Retain(time.Time, time.Duration, int64) (int, error) { return 0, nil }

// Stats reports an empty log with the reason it is offline.
func (l *OfflineLog) Stats() LogStats { return LogStats{Offline: l.reason} }

// Close has nothing to release.
func (l *OfflineLog) Close() error { return nil }

// Drop has nothing to release; the topic delete removes the directory.
func (l *OfflineLog) Drop() error { return nil }
