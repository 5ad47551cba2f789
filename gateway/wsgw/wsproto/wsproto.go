// Package wsproto is the binary encoding of the WebSocket gateway's
// protocol (package wsgw): the commands a client sends in binary frames,
// and the replies and deliveries the broker sends back. It does no I/O;
// the broker's side and Go clients (the load tester) share it.
//
// Every frame is one WebSocket binary message. Integers are big-endian
// (what a browser's DataView reads by default). A frame starts with an op
// byte; commands and their replies then carry the client's id:
//
//	command:  op u8 | id u32 | body
//	reply:    op u8 | id u32 | body          (OpOK, OpAck, OpError, OpTopic)
//	push:     op u8 | body                   (OpMessages)
//
// Field types:
//
//	str16   u16 length, then that many bytes of UTF-8
//	bytes32 u32 length, then the bytes
//	key     i32 length, -1 for no key, then the bytes
//	headers u16 count, then count × (str16 name, bytes32 value)
//
// Command bodies:
//
//	OpAuth           mech u8 (1 token, 2 user and password), then str16 token,
//	                 or str16 user, str16 password
//	OpSubscribe      str16 topic | partition i32 (-1 all) | start u8 | value i64
//	                 start: 0 latest, 1 earliest, 2 offset (value), 3 time
//	                 (value: Unix nanoseconds); value is 0 for latest/earliest
//	OpUnsubscribe    str16 topic | partition i32 (-1 all)
//	OpPublish        str16 topic | partition i32 (-1: by key, or the broker
//	                 picks) | count u32 | count × record
//	                 record: timestamp i64 (Unix ns, 0 now) | key | bytes32 value | headers
//	OpCreateTopic    str16 topic | bytes32 config (a JSON object, as the JSON
//	                 protocol's "config"; empty for the defaults)
//	OpDescribeTopic  str16 topic
//	OpDeleteTopic    str16 topic
//
// Server frames:
//
//	OpOK        id u32
//	OpAck       id u32 | runs u32 | runs × (partition i32 | base offset i64 | count u32)
//	            the published records in order: run i's records went to
//	            partition i at offsets base .. base+count-1
//	OpError     id u32 | code u16 (the broker's error code) | str16 message
//	OpTopic     id u32 | bytes32 JSON (the JSON protocol's "topic" object)
//	OpMessages  str16 topic | partition i32 | count u32 | count × delivery
//	            delivery: offset i64 | timestamp i64 (Unix ns) | key | bytes32 value | headers
//
// The op values and layouts above are part of the format.
package wsproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Command ops (client to broker). Values are part of the format.
const (
	OpAuth          byte = 0x01
	OpSubscribe     byte = 0x02
	OpUnsubscribe   byte = 0x03
	OpPublish       byte = 0x04
	OpCreateTopic   byte = 0x05
	OpDescribeTopic byte = 0x06
	OpDeleteTopic   byte = 0x07
)

// Server ops (broker to client). Values are part of the format.
const (
	OpOK       byte = 0x81
	OpAck      byte = 0x82
	OpError    byte = 0x83
	OpMessages byte = 0x84
	OpTopic    byte = 0x85
)

// Auth mechanisms of OpAuth.
const (
	MechToken    byte = 1
	MechPassword byte = 2
)

// Start kinds of OpSubscribe (the same values as wire.StartKind).
const (
	StartLatest   byte = 0
	StartEarliest byte = 1
	StartOffset   byte = 2
	StartTime     byte = 3
)

// PartitionAny in a partition field: every partition (subscribe), or by
// key / the broker's choice (publish).
const PartitionAny int32 = -1

// HeaderSize is the op and id that start every command and reply.
const HeaderSize = 5

// Minimum encoded sizes, for bounding counts read from a frame before
// anything is allocated for them.
const (
	minRecord   = 8 + 4 + 4 + 2
	minDelivery = 8 + 8 + 4 + 4 + 2
	minHeader   = 2 + 4
	ackRunSize  = 4 + 8 + 4
)

// ErrMalformed is a frame that does not decode.
var ErrMalformed = errors.New("wsproto: malformed frame")

// Reader reads a frame's fields; the first failure sticks (Err), and later
// reads return zero values, so a decoder checks once at the end.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) Reader { return Reader{b: b} }

func (r *Reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	r.b = nil
}

func (r *Reader) take(n int, what string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

// U8 reads a byte.
func (r *Reader) U8(what string) byte {
	if p := r.take(1, what); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads a u16.
func (r *Reader) U16(what string) uint16 {
	if p := r.take(2, what); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

// U32 reads a u32.
func (r *Reader) U32(what string) uint32 {
	if p := r.take(4, what); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}

// I64 reads an i64.
func (r *Reader) I64(what string) int64 {
	if p := r.take(8, what); p != nil {
		return int64(binary.BigEndian.Uint64(p))
	}
	return 0
}

// Str16 reads a str16 as bytes of the frame.
func (r *Reader) Str16(what string) []byte { return r.take(int(r.U16(what)), what) }

// Bytes32 reads a bytes32, aliasing the frame.
func (r *Reader) Bytes32(what string) []byte {
	n := r.U32(what)
	if n > math.MaxInt32 {
		r.fail(what)
		return nil
	}
	return r.take(int(n), what)
}

// Key reads a key: nil for -1, else bytes of the frame (empty, not nil,
// for a key of length zero).
func (r *Reader) Key(what string) []byte {
	n := int32(r.U32(what))
	if n == -1 || r.err != nil {
		return nil
	}
	p := r.take(int(n), what)
	if p == nil && r.err == nil {
		return []byte{}
	}
	return p
}

// Len is what is left to read.
func (r *Reader) Len() int { return len(r.b) }

// Err is the first failure.
func (r *Reader) Err() error { return r.err }

// End fails when bytes are left over, and returns Err.
func (r *Reader) End() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return r.err
}

// headers reads a headers field into hs, returning it grown.
func (r *Reader) headers(hs []client.Header) []client.Header {
	n := int(r.U16("header count"))
	if n*minHeader > r.Len() {
		r.fail("header count")
		return hs
	}
	for range n {
		k := r.Str16("header name")
		v := r.Bytes32("header value")
		if r.err != nil {
			return hs
		}
		hs = append(hs, client.Header{Key: string(k), Value: v})
	}
	return hs
}

// Command is a decoded command. Byte fields alias the frame.
type Command struct {
	Op        byte
	ID        uint32
	Topic     string
	Partition int32
	// Subscribe's start: StartKind and StartValue.
	StartKind  byte
	StartValue int64
	// Auth.
	Mech                  byte
	Token, User, Password string
	// Publish: the records, reusing the slices' room across calls.
	Records []client.Message
	headers []client.Header
	// CreateTopic: the config JSON.
	Config []byte
}

// Start is the subscription's start as a client position.
func (c *Command) Start() client.Position {
	switch c.StartKind {
	case StartEarliest:
		return client.Earliest
	case StartOffset:
		return client.AtOffset(c.StartValue)
	case StartTime:
		return client.AtTime(time.Unix(0, c.StartValue))
	}
	return client.Latest
}

// PeekID returns a command frame's op and id, or ok false when the frame
// is too short to hold them.
func PeekID(frame []byte) (op byte, id uint32, ok bool) {
	if len(frame) < HeaderSize {
		return 0, 0, false
	}
	return frame[0], binary.BigEndian.Uint32(frame[1:]), true
}

// DecodeCommand decodes a command frame into c, reusing c's slices.
// Errors wrap ErrMalformed, or are a wire.Error of CodeUnknownType for an
// op it does not know.
func DecodeCommand(frame []byte, c *Command) error {
	r := NewReader(frame)
	*c = Command{Records: c.Records[:0], headers: c.headers[:0]}
	c.Op = r.U8("op")
	c.ID = r.U32("id")
	if r.Err() != nil {
		return r.Err()
	}
	switch c.Op {
	case OpAuth:
		c.Mech = r.U8("mechanism")
		switch c.Mech {
		case MechToken:
			c.Token = string(r.Str16("token"))
		case MechPassword:
			c.User = string(r.Str16("user"))
			c.Password = string(r.Str16("password"))
		default:
			r.fail("mechanism")
		}
	case OpSubscribe:
		c.Topic = string(r.Str16("topic"))
		c.Partition = int32(r.U32("partition"))
		c.StartKind = r.U8("start")
		c.StartValue = r.I64("start value")
		if c.StartKind > StartTime {
			r.fail("start")
		}
	case OpUnsubscribe:
		c.Topic = string(r.Str16("topic"))
		c.Partition = int32(r.U32("partition"))
	case OpPublish:
		c.Topic = string(r.Str16("topic"))
		c.Partition = int32(r.U32("partition"))
		c.decodeRecords(&r)
	case OpCreateTopic:
		c.Topic = string(r.Str16("topic"))
		c.Config = r.Bytes32("config")
	case OpDescribeTopic, OpDeleteTopic:
		c.Topic = string(r.Str16("topic"))
	default:
		return wire.Errorf(wire.CodeUnknownType, fmt.Sprintf("unknown op 0x%02x", c.Op))
	}
	return r.End()
}

// decodeRecords reads a publish's records. Their headers share one slice,
// cut into each record's part once all are read (appending may move it).
func (c *Command) decodeRecords(r *Reader) {
	n := int(r.U32("record count"))
	if n > r.Len()/minRecord {
		r.fail("record count")
		return
	}
	if cap(c.Records) < n {
		c.Records = make([]client.Message, 0, n)
	}
	var spans [][2]int32
	for range n {
		ts := r.I64("timestamp")
		m := client.Message{Key: r.Key("key"), Value: r.Bytes32("value")}
		if ts != 0 {
			m.Timestamp = time.Unix(0, ts)
		}
		from := len(c.headers)
		c.headers = r.headers(c.headers)
		if r.err != nil {
			return
		}
		if len(c.headers) > from {
			spans = append(spans, [2]int32{int32(len(c.Records)), int32(from)})
		}
		c.Records = append(c.Records, m)
	}
	for i, s := range spans {
		end := len(c.headers)
		if i+1 < len(spans) {
			end = int(spans[i+1][1])
		}
		c.Records[s[0]].Headers = c.headers[s[1]:end:end]
	}
}

// Encoding.

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func appendI64(b []byte, v int64) []byte  { return binary.BigEndian.AppendUint64(b, uint64(v)) }

// AppendStr16 appends a str16; a longer string is cut at 65535 bytes.
func AppendStr16(b []byte, s string) []byte {
	s = s[:min(len(s), math.MaxUint16)]
	return append(appendU16(b, uint16(len(s))), s...)
}

// AppendBytes32 appends a bytes32.
func AppendBytes32(b, p []byte) []byte { return append(appendU32(b, uint32(len(p))), p...) }

func appendKey(b, key []byte) []byte {
	if key == nil {
		return appendU32(b, math.MaxUint32) // -1
	}
	return AppendBytes32(b, key)
}

func appendHeaders(b []byte, hs []client.Header) []byte {
	b = appendU16(b, uint16(len(hs)))
	for _, h := range hs {
		b = AppendStr16(b, h.Key)
		b = AppendBytes32(b, h.Value)
	}
	return b
}

// AppendHead appends the op and id that start a command or reply.
func AppendHead(b []byte, op byte, id uint32) []byte { return appendU32(append(b, op), id) }

// AppendAuthToken appends an OpAuth command with a token.
func AppendAuthToken(b []byte, id uint32, token string) []byte {
	return AppendStr16(append(AppendHead(b, OpAuth, id), MechToken), token)
}

// AppendAuthPassword appends an OpAuth command with a user and password.
func AppendAuthPassword(b []byte, id uint32, user, password string) []byte {
	b = append(AppendHead(b, OpAuth, id), MechPassword)
	return AppendStr16(AppendStr16(b, user), password)
}

// AppendSubscribe appends an OpSubscribe command.
func AppendSubscribe(b []byte, id uint32, topic string, partition int32, start wire.Start) []byte {
	b = AppendStr16(AppendHead(b, OpSubscribe, id), topic)
	b = appendU32(b, uint32(partition))
	return appendI64(append(b, byte(start.Kind)), start.Value)
}

// AppendTopicCommand appends an OpUnsubscribe (with partition), or an
// OpDescribeTopic or OpDeleteTopic (partition ignored).
func AppendTopicCommand(b []byte, op byte, id uint32, topic string, partition int32) []byte {
	b = AppendStr16(AppendHead(b, op, id), topic)
	if op == OpUnsubscribe {
		b = appendU32(b, uint32(partition))
	}
	return b
}

// AppendCreateTopic appends an OpCreateTopic command.
func AppendCreateTopic(b []byte, id uint32, topic string, config []byte) []byte {
	return AppendBytes32(AppendStr16(AppendHead(b, OpCreateTopic, id), topic), config)
}

// AppendPublishHead appends an OpPublish command's head with a count of
// zero; add records with AppendRecord and set the count with SetCount at
// the returned position.
func AppendPublishHead(b []byte, id uint32, topic string, partition int32) (_ []byte, countAt int) {
	b = appendU32(AppendStr16(AppendHead(b, OpPublish, id), topic), uint32(partition))
	return appendU32(b, 0), len(b)
}

// AppendRecord appends a publish's record.
func AppendRecord(b []byte, m *client.Message) []byte {
	var ts int64
	if !m.Timestamp.IsZero() {
		ts = m.Timestamp.UnixNano()
	}
	b = appendKey(appendI64(b, ts), m.Key)
	return appendHeaders(AppendBytes32(b, m.Value), m.Headers)
}

// SetCount stores a count at countAt (from AppendPublishHead or
// AppendMessagesHead).
func SetCount(b []byte, countAt int, n int) { binary.BigEndian.PutUint32(b[countAt:], uint32(n)) }

// AppendOK appends an OpOK reply.
func AppendOK(b []byte, id uint32) []byte { return AppendHead(b, OpOK, id) }

// AppendAck appends an OpAck reply for acks, one per published record in
// order, as runs of consecutive offsets.
func AppendAck(b []byte, id uint32, acks []client.Ack) []byte {
	b = AppendHead(b, OpAck, id)
	at := len(b)
	b = appendU32(b, 0)
	runs := 0
	for i := 0; i < len(acks); {
		j := i + 1
		for j < len(acks) && acks[j].Partition == acks[i].Partition && acks[j].Offset == acks[i].Offset+int64(j-i) {
			j++
		}
		b = appendU32(b, uint32(acks[i].Partition))
		b = appendI64(b, acks[i].Offset)
		b = appendU32(b, uint32(j-i))
		runs++
		i = j
	}
	binary.BigEndian.PutUint32(b[at:], uint32(runs))
	return b
}

// AppendError appends an OpError reply.
func AppendError(b []byte, id uint32, code wire.Code, msg string) []byte {
	return AppendStr16(appendU16(AppendHead(b, OpError, id), uint16(code)), msg)
}

// AppendTopic appends an OpTopic reply carrying a JSON document.
func AppendTopic(b []byte, id uint32, doc []byte) []byte {
	return AppendBytes32(AppendHead(b, OpTopic, id), doc)
}

// AppendMessagesHead appends an OpMessages frame's head with a count of
// zero; add deliveries with AppendDelivery and set the count with SetCount.
func AppendMessagesHead(b []byte, topic string, partition int32) (_ []byte, countAt int) {
	b = appendU32(AppendStr16(append(b, OpMessages), topic), uint32(partition))
	return appendU32(b, 0), len(b)
}

// AppendDelivery appends one delivered record.
func AppendDelivery(b []byte, offset, ts int64, key, value []byte, hs []client.Header) []byte {
	b = appendKey(appendI64(appendI64(b, offset), ts), key)
	return appendHeaders(AppendBytes32(b, value), hs)
}

// Reply is a decoded server frame. Byte fields alias the frame.
type Reply struct {
	Op        byte
	ID        uint32
	Code      wire.Code
	Message   string
	Runs      []AckRun
	JSON      []byte
	Topic     string
	Partition int32
	// Deliveries: Count records, read with Next.
	Count int
	recs  Reader
}

// AckRun is a run of an OpAck: Count records at Partition from Offset on.
type AckRun struct {
	Partition int32
	Offset    int64
	Count     uint32
}

// Records is the number of records the runs acknowledge.
func (r *Reply) Records() int {
	n := 0
	for _, a := range r.Runs {
		n += int(a.Count)
	}
	return n
}

// Err is the error an OpError carries, as a *wire.Error.
func (r *Reply) Err() error { return wire.Errorf(r.Code, r.Message) }

// DecodeReply decodes a server frame into p, reusing p.Runs. For
// OpMessages it reads the head; Next reads the deliveries.
func DecodeReply(frame []byte, p *Reply) error {
	r := NewReader(frame)
	*p = Reply{Runs: p.Runs[:0]}
	p.Op = r.U8("op")
	switch p.Op {
	case OpOK, OpAck, OpError, OpTopic:
		p.ID = r.U32("id")
	}
	switch p.Op {
	case OpOK:
	case OpAck:
		n := int(r.U32("runs"))
		if n > r.Len()/ackRunSize {
			r.fail("runs")
			n = 0
		}
		for range n {
			p.Runs = append(p.Runs, AckRun{Partition: int32(r.U32("partition")), Offset: r.I64("offset"), Count: r.U32("count")})
		}
	case OpError:
		p.Code = wire.Code(r.U16("code"))
		p.Message = string(r.Str16("message"))
	case OpTopic:
		p.JSON = r.Bytes32("topic")
	case OpMessages:
		p.Topic = string(r.Str16("topic"))
		p.Partition = int32(r.U32("partition"))
		p.Count = int(r.U32("count"))
		if p.Count > r.Len()/minDelivery {
			r.fail("count")
		}
		p.recs = r
		return r.Err()
	default:
		return fmt.Errorf("%w: unknown op 0x%02x", ErrMalformed, p.Op)
	}
	return r.End()
}

// Next reads an OpMessages frame's next delivery into d, reusing d's
// header slice; the slices alias the frame. It returns false at the end or
// on a malformed delivery (Err tells).
func (p *Reply) Next(d *client.Delivery) bool {
	if p.Count == 0 || p.recs.err != nil {
		return false
	}
	r := &p.recs
	d.Topic, d.Partition = p.Topic, p.Partition
	d.Offset = r.I64("offset")
	d.Timestamp = time.Unix(0, r.I64("timestamp"))
	d.Key = r.Key("key")
	d.Value = r.Bytes32("value")
	d.Headers = r.headers(d.Headers[:0])
	if r.err != nil {
		return false
	}
	p.Count--
	if p.Count == 0 {
		return r.End() == nil
	}
	return true
}

// DeliveriesErr is the failure that stopped Next, if any.
func (p *Reply) DeliveriesErr() error { return p.recs.err }

// TopicConfigDoc is a topic's configuration as create_topic carries it,
// in both protocols (JSON). Zero fields take the broker's defaults.
type TopicConfigDoc struct {
	Partitions     int    `json:"partitions,omitempty"`
	MaxSubscribers int    `json:"max_subscribers,omitempty"`
	Storage        string `json:"storage,omitempty"` // "disk" or "memory"
	Fsync          string `json:"fsync,omitempty"`   // "always", "interval=DURATION", "never"
	// Retention is a Go duration ("24h"); "forever" keeps messages until
	// deleted by size.
	Retention string `json:"retention,omitempty"`
	// RetentionBytes bounds each partition's log; -1 for no bound.
	RetentionBytes  int64  `json:"retention_bytes,omitempty"`
	DeadLetterTopic string `json:"dead_letter_topic,omitempty"`
	MaxDeliveries   int    `json:"max_deliveries,omitempty"`
	Encryption      string `json:"encryption,omitempty"` // "on" or "off"
	Replicas        int    `json:"replicas,omitempty"`
}

// Config is the document as a client.TopicConfig.
func (d *TopicConfigDoc) Config() (client.TopicConfig, error) {
	cfg := client.TopicConfig{Partitions: d.Partitions, MaxSubscribers: d.MaxSubscribers, Storage: d.Storage,
		Fsync: d.Fsync, RetentionBytes: d.RetentionBytes, DeadLetterTopic: d.DeadLetterTopic,
		MaxDeliveries: d.MaxDeliveries, Encryption: d.Encryption, Replicas: d.Replicas}
	switch d.Retention {
	case "":
	case "forever":
		cfg.Retention = client.KeepForever
	default:
		r, err := time.ParseDuration(d.Retention)
		if err != nil || r <= 0 {
			return cfg, wire.Errorf(wire.CodeInvalidArgument, fmt.Sprintf("retention %q: want a positive duration such as 24h, or forever", d.Retention))
		}
		cfg.Retention = r
	}
	return cfg, nil
}

// ConfigDoc is cfg as a document.
func ConfigDoc(cfg client.TopicConfig) TopicConfigDoc {
	d := TopicConfigDoc{Partitions: cfg.Partitions, MaxSubscribers: cfg.MaxSubscribers, Storage: cfg.Storage,
		Fsync: cfg.Fsync, RetentionBytes: cfg.RetentionBytes, DeadLetterTopic: cfg.DeadLetterTopic,
		MaxDeliveries: cfg.MaxDeliveries, Encryption: cfg.Encryption, Replicas: cfg.Replicas}
	switch {
	case cfg.Retention == client.KeepForever:
		d.Retention = "forever"
	case cfg.Retention > 0:
		d.Retention = cfg.Retention.String()
	}
	return d
}

// TopicDoc is a topic's description as describe_topic answers it (JSON,
// in both protocols).
type TopicDoc struct {
	Name       string            `json:"name"`
	Config     map[string]string `json:"config"`
	Defaults   map[string]string `json:"defaults,omitempty"`
	Partitions []PartitionDoc    `json:"partitions"`
}

// PartitionDoc is one partition of a TopicDoc.
type PartitionDoc struct {
	ID          int    `json:"id"`
	StartOffset int64  `json:"start_offset"`
	EndOffset   int64  `json:"end_offset"`
	Subscribers int    `json:"subscribers"`
	Bytes       int64  `json:"bytes"`
	Segments    int    `json:"segments"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
}

// TopicDocOf describes info.
func TopicDocOf(info client.TopicInfo) TopicDoc {
	d := TopicDoc{Name: info.Name, Config: info.Config, Defaults: info.Defaults, Partitions: make([]PartitionDoc, len(info.Partitions))}
	for i, p := range info.Partitions {
		d.Partitions[i] = PartitionDoc{ID: p.ID, StartOffset: p.StartOffset, EndOffset: p.EndOffset, Subscribers: p.Subscribers,
			Bytes: p.Bytes, Segments: p.Segments, State: p.State.String(), Reason: p.Reason}
	}
	return d
}

// Info is the document as a client.TopicInfo.
func (d *TopicDoc) Info() client.TopicInfo {
	info := client.TopicInfo{Name: d.Name, Config: d.Config, Defaults: d.Defaults, Partitions: make([]client.PartitionInfo, len(d.Partitions))}
	for i, p := range d.Partitions {
		st := wire.PartitionOnline
		for s := range wire.PartitionState(8) {
			if s.String() == p.State {
				st = s
			}
		}
		info.Partitions[i] = client.PartitionInfo{ID: p.ID, StartOffset: p.StartOffset, EndOffset: p.EndOffset,
			Subscribers: p.Subscribers, Bytes: p.Bytes, Segments: p.Segments, State: st, Reason: p.Reason}
	}
	return info
}
