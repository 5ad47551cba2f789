package driver

import (
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// The idempotent producers a partition remembers (shard/producers.go)
// live in the shard's memory and are rebuilt at start: from the snapshot
// a clean shutdown wrote beside the log, when it describes the log as it
// is, or else (after a crash) by scanning the log's last two segments,
// whose batch headers hold every producer id and sequence. Scanning costs
// about 0.24 to 0.64 s per full 128 MiB segment (storage's
// BenchmarkScanProducers), too slow for every start of a broker with many
// partitions, and after a crash recovery scans the last segment anyway.

// ProducerSnapshot is the file, in a partition's directory, holding its
// producer table as of a clean shutdown.
const ProducerSnapshot = "producers"

// tailSegments is how many segments before the active one a rebuild
// scans: a producer is remembered after a crash if its last batch is
// followed by less than a whole segment of others' batches.
const tailSegments = 1

// sideFiler is a log that keeps small files of its own (storage.DiskLog).
type sideFiler interface {
	WriteSideFile(name string, data []byte) error
	ReadSideFile(name string) ([]byte, error)
}

// SaveProducers writes p's producer table beside its log for the next
// start. Call it after p's shard stopped and before its log is closed.
// A memory log keeps nothing: its data does not survive a restart either.
func SaveProducers(p *shard.Partition) error {
	l, ok := p.Log.(sideFiler)
	if !ok {
		return nil
	}
	_, end := p.Log.Bounds()
	return l.WriteSideFile(ProducerSnapshot, p.AppendProducerSnapshot(nil, end))
}

// RestoreProducers rebuilds p's producer table when its log has just been
// opened, before p is adopted: from the snapshot when it matches the log's
// end, else by scanning the log's tail (scanned reports which). A failed
// scan leaves the producers it read; the others start unknown.
func RestoreProducers(p *shard.Partition) (scanned bool, err error) {
	l, ok := p.Log.(sideFiler)
	if !ok {
		return false, nil
	}
	_, end := p.Log.Bounds()
	if data, err := l.ReadSideFile(ProducerSnapshot); err == nil {
		if ok, _ := p.RestoreProducerSnapshot(data, end); ok {
			return false, nil
		}
	}
	return true, storage.ScanProducers(p.Log, storage.TailStart(p.Log, tailSegments), p.RestoreProducer)
}
