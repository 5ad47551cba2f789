// Package transport carries Raft messages between the nodes of a
// Ratatoskr cluster. Every node hosts many Raft groups (one per partition
// and the controller's), and each message travels as an Envelope: the
// group id and the raftpb.Message.
//
// TCP is the transport of a real cluster; MemNetwork makes in-memory
// transports with injected faults (drops, delays, duplicates, reordering,
// partitions, cuts) for multi-node tests in one process. Both implement
// Transport.
//
// # One connection per node pair
//
// A node opens one connection to each peer and sends the messages of all
// its groups for that peer on it, as CockroachDB does per node pair,
// rather than one per group: with thousands of groups, per-group
// connections would cost thousands of sockets, handshakes and goroutines
// per peer, and each small heartbeat would be its own write. Multiplexed,
// the messages of every group queued for a peer while a write was in
// progress leave together in the next one.
//
// Each direction has its own connection, opened by the sender: A dials B
// for A's messages and B dials A for B's. The dialer only writes and the
// acceptor only reads (after the handshake), so neither side needs a
// tie-break for two nodes dialing each other at once, and a connection's
// failure is handled entirely by the side that can retry it. Inbound, a
// node keeps one connection per peer: a newer one from the same node
// replaces the older.
//
// # Batching
//
// Send never blocks and never writes: it sizes each message (protobuf
// caches the size in the message), appends it to the peer's queue and
// wakes the peer's writer goroutine. The writer takes everything queued at
// once, encodes it into frames in one reused buffer (marshalling each
// message in place with its cached size) and writes the buffer with one
// call. The busier the node, the more each write carries. A peer's queue
// is bounded (TCPConfig.MaxQueueBytes): what does not fit is dropped and
// counted, as are messages sent while the peer is unreachable, because
// Raft sends again whatever it still needs; the peer's OnUnreachable and
// Unreachable feed raft's ReportUnreachable.
//
// # Handshake
//
// The dialer speaks first, within HandshakeTimeout, after TLS when it is
// configured. All integers are big-endian.
//
//	hello (dialer)                      ack (acceptor)
//	+----------------------+            +----------------------+
//	| magic "RTKC"   4     |            | magic "RTKC"   4     |
//	| version        2     |            | version        2     |
//	| from node id   8     |            | status         1     |  0 ok, 1 wrong cluster,
//	| to node id     8     |            | node id        8     |  2 wrong node, 3 version,
//	| disk id       16     |            | disk id       16     |  4 not admitted, 5 not yet
//	| cluster id len 1     |            | (4: reason len 2,    |
//	| cluster id     n     |            |     reason     n)    |
//	+----------------------+            +----------------------+
//
// The acceptor answers every hello it could read, refusals included, then
// closes the connection on a refusal; a wrong magic gets no answer. The
// "to" node id lets the acceptor refuse a dialer that meant another node
// (an address taken over by a replacement). The disk ids name each side's
// data directory (DiskID): with TCPConfig.Admit, each side refuses a peer
// whose directory is not the one it knows for that node (or a node
// removed from the cluster), the acceptor by answering 4 with its reason,
// the dialer by closing the connection after the ack. A node
// that lost its data and came back under its old id would otherwise be
// sent Raft messages about entries it no longer has (etcd raft panics on
// them, and a quorum counting its vote could lose acknowledged writes).
// Status 5 asks the dialer to come back later: the acceptor is still
// reading back what it knows of the nodes. The "from" node id is what
// the handler is given: it is the dialer's word, trusted as far as the
// connection is (mutual TLS proves a node is one of the cluster's, not
// which id it has).
//
// # Frames
//
// After the handshake the dialer sends frames until the connection ends:
//
//	frame
//	+----------------+----------------+=====================+
//	| length uint32  | CRC32C uint32  | payload (length)    |
//	+----------------+----------------+=====================+
//
//	payload
//	+-------------+------------------------------------------------+
//	| count uint32| count x ( group   uvarint                       |
//	|             |           length  uvarint                       |
//	|             |           message raftpb.Message, protobuf )    |
//	+-------------+------------------------------------------------+
//
// The CRC (Castagnoli) covers the payload. A frame, header included, is
// at most MaxFrameBytes: a writer starts a new frame in the same buffer
// when the next message would not fit, and a reader closes the connection
// on a longer one before reading it. The handler is called once per frame
// with its messages in order, so a peer's messages arrive in the order it
// sent them for as long as its connection lasts. Anything malformed (a
// bad length, checksum, count, varint or message, bytes after the last
// message, a wrong magic or cluster id) is logged and counted, and closes
// that connection; the others carry on.
package transport
