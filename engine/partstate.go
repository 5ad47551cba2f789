package engine

import (
	"strconv"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A partition is in one of three states, read from its log's stats
// wherever it is reported (DescribeTopic, the admin API, metrics, the
// health report), so all of them agree:
//
//   - offline: its log could not be opened at start (storage.OfflineLog);
//     it refuses publishes and reads with PARTITION_OFFLINE until a
//     restart opens it;
//   - read-only: a failed fsync, or a failed write that could not be cut
//     off, made its log refuse writes until restart; it stays readable;
//   - online: everything else.

// partitionState is the state of a partition whose log reported st, and
// why it is not online.
func partitionState(st *storage.LogStats) (wire.PartitionState, string) {
	switch {
	case st.Offline != "":
		return wire.PartitionOffline, st.Offline
	case st.ReadOnly != "":
		return wire.PartitionReadOnly, st.ReadOnly
	}
	return wire.PartitionOnline, ""
}

// offlineReason says why p is offline, or "" when it is not. It costs a
// type assertion, so paths that start a read can afford it.
func offlineReason(p *shard.Partition) string {
	if l, ok := p.Log.(*storage.OfflineLog); ok {
		return l.Reason()
	}
	return ""
}

// checkOnline refuses a read of an offline partition with PARTITION_OFFLINE.
func checkOnline(p *shard.Partition) error {
	why := offlineReason(p)
	if why == "" {
		return nil
	}
	return wire.Errorf(wire.CodePartitionOffline, "partition "+strconv.Itoa(int(p.ID))+" of topic "+p.Topic+
		" is offline until the broker restarts with its log readable: "+why)
}
