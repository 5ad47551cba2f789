package storage

import "errors"

// Remote is a Log kept by a server across the network (package redislog):
// its writes, retention passes and reads wait for that server, which may be
// slow or gone. The shard's driver gives such logs a writer goroutine of
// their own, apart from the disk logs' syncer, so a server that stops
// answering delays only the partitions kept on it; and it runs their
// retention there rather than on the shard.
type Remote interface {
	Staged
	// Remote names the kind of server ("redis"), for messages.
	Remote() string
}

// ErrUnavailable says the log's server cannot be reached, or refused a
// write it may accept later (it is out of memory). Nothing was stored; a
// retry may succeed.
var ErrUnavailable = errors.New("storage: unavailable")

// InDoubtError is a failed write whose outcome is unknown: it was sent to
// the log's server and no answer came (a timeout, a broken connection).
// Its batches, up to End, may be stored. Unlike an UncutError the log
// goes on: it removes whatever that write left before it writes again, so
// the batches after the written end are taken back before anything new
// follows them.
type InDoubtError struct {
	Err error
	End int64 // the offset after the last batch of the write in doubt
}

func (e *InDoubtError) Error() string {
	return "storage: a write's outcome is in doubt: " + e.Err.Error()
}

func (e *InDoubtError) Unwrap() error { return e.Err }
