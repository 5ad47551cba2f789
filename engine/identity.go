package engine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/cluster/transport"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// A node that lost its data directory and comes back under its old id
// must not take part in the cluster: its empty Raft logs would be sent
// commit indexes for entries it no longer has (etcd raft panics on them),
// and worse, its vote and acknowledgements would count towards quorums
// that the entries it had acknowledged no longer reach. So each data
// directory gets a random id when it is made (identityFile), nodes tell
// each other theirs in the transport handshake, and each node remembers
// the id it first met for every peer (knownDisksFile, trust on first
// use, as ssh's known_hosts): a peer that comes back with another is
// refused, both ways, until an operator removes it and adds its
// replacement under a new node id (docs/CLUSTER.md, "Replacing a node").
const (
	identityFile   = "/cluster/identity.json"
	knownDisksFile = "/cluster/known_disks.json"
)

// identity is what identityFile holds.
type identity struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID string `json:"cluster_id"`
	Disk      string `json:"disk"` // hex of a transport.DiskID
}

// loadIdentity returns the id of the data directory of node nodeID of
// cluster clusterID, drawing and recording one the first time (a new
// directory, or one an older version made). It refuses a directory that
// belongs to another node or cluster.
func loadIdentity(fsys vfs.FS, dataDir string, nodeID uint64, clusterID string) (transport.DiskID, error) {
	var d transport.DiskID
	path := dataDir + identityFile
	data, err := storage.ReadFile(fsys, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := rand.Read(d[:]); err != nil {
			return d, err
		}
		if err := fsys.MkdirAll(dataDir+"/cluster", 0o700); err != nil {
			return d, err
		}
		id := identity{NodeID: nodeID, ClusterID: clusterID, Disk: hex.EncodeToString(d[:])}
		data, _ := json.MarshalIndent(id, "", "  ")
		if err := storage.WriteFileAtomic(fsys, path, append(data, '\n'), true); err != nil {
			return d, fmt.Errorf("recording the data directory's identity: %w", err)
		}
		return d, nil
	case err != nil:
		return d, err
	}
	var id identity
	if err := json.Unmarshal(data, &id); err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	b, err := hex.DecodeString(id.Disk)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("%s: disk %q is not %d hex bytes", path, id.Disk, len(d))
	}
	copy(d[:], b)
	switch {
	case id.NodeID != nodeID:
		return d, fmt.Errorf("the data directory %s belongs to node %d, not %d: start it with --node-id %d, or give node %d "+
			"a directory of its own", dataDir, id.NodeID, nodeID, id.NodeID, nodeID)
	case id.ClusterID != clusterID:
		return d, fmt.Errorf("the data directory %s belongs to cluster %q, not %q", dataDir, id.ClusterID, clusterID)
	}
	return d, nil
}

// admit is the transport's Admit: a data directory other than the one
// this node met for the peer is refused. (A node removed from the cluster
// is not refused here: it may still hold replicas that are being moved
// off it, and those moves need its connections.)
func (c *clusterNode) admit(peer uint64, disk transport.DiskID) error {
	if n, ok := c.view.Load().Node(peer); ok && n.Status == meta.NodeRemoved && !c.hasMember(peer) {
		return fmt.Errorf("%s%d", removedReason, peer)
	}
	return c.disks.admit(peer, disk)
}

// removedReason starts the refusal of a removed node's handshake
// (followed by its id), which tells it: a node removed while it was down
// hears of it from no Raft group, as none has it any more. A removed node
// that a group here still has (one moving off it, which may need its
// log) is admitted until the group has left it.
const removedReason = "removed from the cluster: node "

// refused takes a peer's refusal of this node's handshake
// (transport.TCPConfig.OnRefused): a refusal because this node was
// removed makes it refuse to serve as a member (refuseRemoved).
func (c *clusterNode) refused(peer uint64, reason string) {
	if strings.HasSuffix(reason, removedReason+strconv.FormatUint(c.id, 10)) { // the transport's words come first
		c.e.log.Error("a peer refuses this node: it was removed from the cluster", "peer", peer)
		c.refuseRemoved()
	}
}

// diskBook is the data directory ids this node has met, by node id: the
// transport's Admit.
type diskBook struct {
	fsys  vfs.FS
	path  string
	log   *slog.Logger
	mu    sync.Mutex
	known map[uint64]transport.DiskID
}

func openDiskBook(fsys vfs.FS, dataDir string, log *slog.Logger) (*diskBook, error) {
	b := &diskBook{fsys: fsys, path: dataDir + knownDisksFile, log: log, known: map[uint64]transport.DiskID{}}
	data, err := storage.ReadFile(fsys, b.path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, err
	}
	var raw map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", b.path, err)
	}
	for k, v := range raw {
		id, err := strconv.ParseUint(k, 10, 64)
		hx, herr := hex.DecodeString(v)
		if err != nil || herr != nil || len(hx) != transport.DiskIDLen {
			return nil, fmt.Errorf("%s: bad entry %q: %q", b.path, k, v)
		}
		b.known[id] = transport.DiskID(hx)
	}
	return b, nil
}

// admit implements transport.TCPConfig.Admit.
func (b *diskBook) admit(peer uint64, disk transport.DiskID) error {
	if disk == (transport.DiskID{}) {
		return fmt.Errorf("node %d names no data directory", peer)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.known[peer]; ok {
		if k == disk {
			return nil
		}
		return fmt.Errorf("node %d's data directory is %x, not %x as when this node first met it: its data was lost or "+
			"replaced, and a node must not rejoin under its old id without the entries it acknowledged; stop it, remove "+
			"it (ratatoskr cluster remove-node %d) and add its replacement with a new --node-id", peer, disk[:], k[:], peer)
	}
	next := maps.Clone(b.known)
	next[peer] = disk
	raw := make(map[string]string, len(next))
	for id, d := range next {
		raw[strconv.FormatUint(id, 10)] = hex.EncodeToString(d[:])
	}
	data, _ := json.MarshalIndent(raw, "", "  ")
	if err := storage.WriteFileAtomic(b.fsys, b.path, append(data, '\n'), true); err != nil {
		return fmt.Errorf("recording node %d's data directory: %w", peer, err)
	}
	b.known = next
	b.log.Info("met a node's data directory", "peer", peer, "disk", hex.EncodeToString(disk[:]))
	return nil
}
