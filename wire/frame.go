package wire

import "encoding/binary"

// Protocol versions this package speaks. A connection uses the version
// the broker picked in HelloOK, and a peer of an older version gets
// exactly that version's bytes. Version 2 adds each partition's state to
// TopicInfo; version 3 adds what a client needs to resume after a
// reconnection: the broker's run id in HelloOK, resume offsets in
// Subscribe, and start offsets (also for LATEST) and the storage kind in
// SubscribeOK.
const (
	Version    uint16 = 3 // the newest version
	MinVersion uint16 = 1 // the oldest version still accepted
)

// HeaderSize is the fixed size of every frame header; part of the format.
const HeaderSize = 12

// Header field offsets; part of the format.
const (
	offLength   = 0
	offType     = 4
	offFlags    = 5
	offReserved = 6
	offCorr     = 8
)

// Default limits, announced in HelloOK. A server may configure others.
const (
	DefaultMaxFrameBytes   = 4 << 20 // 4 MiB
	DefaultMaxMessageBytes = 1 << 20 // 1 MiB, as in the seed
)

// Type identifies a frame. Values are part of the format.
type Type uint8

// Frame types. "C" marks client-to-server frames, "S" server-to-client.
const (
	TypeHello         Type = 0x01 // C: first frame of a connection
	TypeHelloOK       Type = 0x02 // S: handshake accepted, limits announced
	TypeError         Type = 0x03 // S: a request failed, or the connection is closing
	TypePing          Type = 0x04 // C/S: liveness probe
	TypePong          Type = 0x05 // C/S: answer to Ping
	TypeOK            Type = 0x06 // S: a request without a result succeeded
	TypeAuthContinue  Type = 0x07 // C: the next message of an authentication exchange Hello started
	TypeAuthChallenge Type = 0x08 // S: the broker's next message of an authentication exchange
	TypeCreateTopic   Type = 0x10 // C
	TypeDeleteTopic   Type = 0x11 // C
	TypeListTopics    Type = 0x12 // C
	TypeTopicList     Type = 0x13 // S: answer to ListTopics
	TypeDescribeTopic Type = 0x14 // C; FlagAutoCreate creates a missing topic where allowed; FlagDefaults
	TypeTopicInfo     Type = 0x15 // S: answer to DescribeTopic and AlterTopic
	TypeAlterTopic    Type = 0x16 // C: change a topic's runtime config (CreateTopic body, partitions 0)
	TypePublish       Type = 0x20 // C
	TypePublishAck    Type = 0x21 // S
	TypeInitProducer  Type = 0x22 // C: ask for a producer id (idempotent publishing)
	TypeProducerID    Type = 0x23 // S: answer to InitProducer
	TypeSubscribe     Type = 0x30 // C
	TypeSubscribeOK   Type = 0x31 // S
	TypeUnsubscribe   Type = 0x32 // C
	TypeDeliver       Type = 0x33 // S
	TypeFetch         Type = 0x40 // C: pull batches of a partition from a position
	TypeFetchResult   Type = 0x41 // S: answer to Fetch
	TypeJoinGroup     Type = 0x50 // C: join a consumer group
	TypeJoinResult    Type = 0x51 // S: answer to JoinGroup
	TypeHeartbeat     Type = 0x52 // C: keep a group membership alive
	TypeLeaveGroup    Type = 0x53 // C
	TypeCommit        Type = 0x54 // C: commit offsets (offset ack mode)
	TypeAck           Type = 0x55 // C: acknowledge messages (message ack mode); answered only on error
	TypeNack          Type = 0x56 // C: reject a message for redelivery; answered only on error
	TypeListGroups    Type = 0x57 // C
	TypeGroupList     Type = 0x58 // S: answer to ListGroups
	TypeDescribeGroup Type = 0x59 // C
	TypeGroupInfo     Type = 0x5a // S: answer to DescribeGroup
	TypeResetGroup    Type = 0x5b // C: move a stopped group's committed offsets
	TypeAssignment    Type = 0x5c // S: a member's partitions changed (unsolicited)
	TypeRedeliver     Type = 0x5d // S: a batch again, for the listed offsets only
)

// FlagAutoCreate on DescribeTopic asks the broker to create the topic with
// its defaults when it is missing and auto-creation is enabled.
const FlagAutoCreate uint8 = 0x01

// FlagDefaults on DescribeTopic and AlterTopic asks the broker to add to
// the TopicInfo's config, after its seven entries, a "default.<key>" entry
// for each setting left at the value that stands for a default (a
// max-deliveries of 0, an empty dead-letter-topic), holding the value it
// stands for. A broker that predates it ignores the flag, as it does every
// flag it does not know.
const FlagDefaults uint8 = 0x02

// FlagEndNotice on Subscribe asks the broker to say when it ends the
// subscription itself: a cluster node that no longer leads the partition
// answers the Subscribe's correlation id a second time, with
// Error(NOT_LEADER) naming the leader it knows, after which the
// subscription is gone. Only a subscription to one partition by number
// is ended so. A broker that predates it ignores the flag, as it does
// every flag it does not know, and stops feeding such a subscription
// without a word.
const FlagEndNotice uint8 = 0x01

// DefaultPrefix starts the config keys FlagDefaults adds.
const DefaultPrefix = "default."

// DefaultMaxDeliveries is what a max-deliveries of 0 stands for: the
// deliveries of a message to a message-mode group before it is
// dead-lettered.
const DefaultMaxDeliveries = 5

// DeadLetterSuffix names the dead-letter topic of a topic that sets none:
// "<topic>.dlq".
const DeadLetterSuffix = ".dlq"

var typeNames = map[Type]string{
	TypeHello: "Hello", TypeHelloOK: "HelloOK", TypeError: "Error", TypePing: "Ping",
	TypePong: "Pong", TypeOK: "OK", TypeAuthContinue: "AuthContinue", TypeAuthChallenge: "AuthChallenge", TypeCreateTopic: "CreateTopic",
	TypeDeleteTopic: "DeleteTopic", TypeListTopics: "ListTopics", TypeTopicList: "TopicList",
	TypeDescribeTopic: "DescribeTopic", TypeTopicInfo: "TopicInfo", TypeAlterTopic: "AlterTopic", TypePublish: "Publish",
	TypePublishAck: "PublishAck", TypeInitProducer: "InitProducer", TypeProducerID: "ProducerID", TypeSubscribe: "Subscribe", TypeSubscribeOK: "SubscribeOK",
	TypeUnsubscribe: "Unsubscribe", TypeDeliver: "Deliver", TypeFetch: "Fetch", TypeFetchResult: "FetchResult",
	TypeJoinGroup: "JoinGroup", TypeJoinResult: "JoinResult", TypeHeartbeat: "Heartbeat",
	TypeLeaveGroup: "LeaveGroup", TypeCommit: "Commit", TypeAck: "Ack", TypeNack: "Nack",
	TypeListGroups: "ListGroups", TypeGroupList: "GroupList", TypeDescribeGroup: "DescribeGroup",
	TypeGroupInfo: "GroupInfo", TypeResetGroup: "ResetGroup", TypeAssignment: "Assignment",
	TypeRedeliver: "Redeliver",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "Type(0x" + hex2(uint8(t)) + ")"
}

func hex2(b uint8) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

// Header is a decoded frame header.
type Header struct {
	Length uint32 // whole frame, header included
	Type   Type
	Flags  uint8
	Corr   uint32
}

// Frame is one complete frame found in a buffer. Body aliases the buffer.
type Frame struct {
	Header
	Body []byte
}

// AppendHeader appends a header for a frame whose body is bodyLen bytes.
func AppendHeader(dst []byte, t Type, flags uint8, corr uint32, bodyLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(HeaderSize+bodyLen))
	dst = append(dst, byte(t), flags, 0, 0)
	return binary.BigEndian.AppendUint32(dst, corr)
}

// StartFrame appends a header whose length is patched later by FinishFrame,
// for bodies whose size is not known up front (record batches). It returns
// the extended slice and the offset of the frame within it.
func StartFrame(dst []byte, t Type, flags uint8, corr uint32) ([]byte, int) {
	start := len(dst)
	return AppendHeader(dst, t, flags, corr, 0), start
}

// FinishFrame writes the length of the frame that starts at start and runs to
// the end of buf.
func FinishFrame(buf []byte, start int) {
	binary.BigEndian.PutUint32(buf[start+offLength:], uint32(len(buf)-start))
}

// ParseHeader decodes the header at the start of b, which must hold at least
// HeaderSize bytes. It checks only what the header alone can tell.
func ParseHeader(b []byte, maxFrame uint32) (Header, error) {
	h := Header{
		Length: binary.BigEndian.Uint32(b[offLength:]),
		Type:   Type(b[offType]),
		Flags:  b[offFlags],
		Corr:   binary.BigEndian.Uint32(b[offCorr:]),
	}
	switch {
	case h.Length < HeaderSize:
		return h, errBadLength
	case h.Length > maxFrame:
		return h, errTooLarge
	case b[offReserved] != 0 || b[offReserved+1] != 0:
		return h, errReserved
	}
	return h, nil
}

var (
	errBadLength = &Error{Code: CodeMalformed, Message: "frame length below header size"}
	errTooLarge  = &Error{Code: CodeFrameTooLarge, Message: "frame exceeds the maximum frame size"}
	errReserved  = &Error{Code: CodeMalformed, Message: "reserved header bits set"}
)

// ReadFrame finds the first frame in buf. It returns the frame and its size
// when buf holds all of it, n == 0 when more bytes are needed, and an error
// when the header is invalid (the connection cannot be resynchronised after
// that and should be closed). It never allocates and never reads past buf.
func ReadFrame(buf []byte, maxFrame uint32) (f Frame, n int, err error) {
	if len(buf) < HeaderSize {
		return f, 0, nil
	}
	f.Header, err = ParseHeader(buf, maxFrame)
	if err != nil {
		return f, 0, err
	}
	if uint64(len(buf)) < uint64(f.Length) {
		return f, 0, nil
	}
	f.Body = buf[HeaderSize:f.Length:f.Length]
	return f, int(f.Length), nil
}

// SetCorr rewrites the correlation id of the frame at the start of b.
func SetCorr(b []byte, corr uint32) { binary.BigEndian.PutUint32(b[offCorr:], corr) }

// SetDeliverHeader turns the header of the Publish frame at the start of b
// into a Deliver header in place: type Deliver, no flags, correlation id 0.
// The body is the same for both frame types.
func SetDeliverHeader(b []byte) {
	b[offType], b[offFlags] = byte(TypeDeliver), 0
	SetCorr(b, 0)
}
