package wire

import "strconv"

// This file holds the bodies of every frame except the record batch. Each
// body type has Append (encode, append-style) and a Decode function. Decoders
// of hot-path frames (Publish, Deliver, PublishAck) return views that alias
// the body; the others copy strings, since they are rare.

// PartitionAny in a Publish lets the broker choose the partition (round robin
// across batches). In Subscribe and Unsubscribe it means every partition.
const PartitionAny int32 = -1

// KV is one per-topic configuration entry.
type KV struct {
	Key, Value string
}

func appendKVs(dst []byte, kvs []KV) []byte {
	dst = appendU16(dst, uint16(len(kvs)))
	for _, kv := range kvs {
		dst = AppendStr16(dst, kv.Key)
		dst = AppendStr16(dst, kv.Value)
	}
	return dst
}

func decodeKVs(d *Decoder) []KV {
	n := int(d.U16())
	if n == 0 || n > d.Remaining()/4 {
		if n != 0 {
			d.take(-1)
		}
		return nil
	}
	kvs := make([]KV, n)
	for i := range kvs {
		kvs[i] = KV{d.String16(), d.String16()}
	}
	return kvs
}

// Hello opens a connection. The client offers a range of versions; the
// server picks the highest it shares. AuthMechanism names how the client
// authenticates (SCRAM-SHA-256, TOKEN, EXTERNAL) and AuthData holds its
// first message; an empty mechanism means none. A mechanism that needs
// more round trips continues with AuthChallenge and AuthContinue frames
// (PROTOCOL.md, "Authentication").
type Hello struct {
	MinVersion, MaxVersion uint16
	ClientName             string
	AuthMechanism          string
	AuthData               []byte
}

// Append encodes h.
func (h *Hello) Append(dst []byte) []byte {
	dst = appendU16(dst, h.MinVersion)
	dst = appendU16(dst, h.MaxVersion)
	dst = AppendStr16(dst, h.ClientName)
	dst = AppendStr16(dst, h.AuthMechanism)
	return AppendBytes32(dst, h.AuthData)
}

// DecodeHello decodes a Hello body.
func DecodeHello(body []byte) (h Hello, err error) {
	d := NewDecoder(body)
	h.MinVersion, h.MaxVersion = d.U16(), d.U16()
	h.ClientName, h.AuthMechanism = d.String16(), d.String16()
	h.AuthData = append([]byte(nil), d.Bytes32()...)
	return h, d.Done()
}

// AppendAuth encodes the body of AuthContinue and AuthChallenge: the
// mechanism's next message.
func AppendAuth(dst, data []byte) []byte { return AppendBytes32(dst, data) }

// DecodeAuth decodes an AuthContinue or AuthChallenge body; the data
// aliases body.
func DecodeAuth(body []byte) ([]byte, error) {
	d := NewDecoder(body)
	data := d.Bytes32()
	return data, d.Done()
}

// HelloOK accepts a connection and announces the limits it must respect.
type HelloOK struct {
	Version         uint16
	MaxFrameBytes   uint32
	MaxMessageBytes uint32
	ServerName      string
	// RunID (version 3) is chosen at random each time the broker starts: a
	// client that reconnects and sees another one knows the broker
	// restarted, and with it every memory topic's offsets.
	RunID uint64
}

// Append encodes h in its Version's layout.
func (h *HelloOK) Append(dst []byte) []byte {
	dst = appendU16(dst, h.Version)
	dst = appendU32(dst, h.MaxFrameBytes)
	dst = appendU32(dst, h.MaxMessageBytes)
	dst = AppendStr16(dst, h.ServerName)
	if h.Version >= 3 {
		dst = appendI64(dst, int64(h.RunID))
	}
	return dst
}

// DecodeHelloOK decodes a HelloOK body in the layout of the version it
// names.
func DecodeHelloOK(body []byte) (h HelloOK, err error) {
	d := NewDecoder(body)
	h.Version, h.MaxFrameBytes, h.MaxMessageBytes = d.U16(), d.U32(), d.U32()
	h.ServerName = d.String16()
	if h.Version >= 3 {
		h.RunID = uint64(d.I64())
	}
	return h, d.Done()
}

// AppendError encodes an Error body.
func AppendError(dst []byte, code Code, msg string) []byte {
	return AppendStr16(appendU16(dst, uint16(code)), msg)
}

// DecodeError decodes an Error body into an *Error.
func DecodeError(body []byte) (*Error, error) {
	d := NewDecoder(body)
	e := &Error{Code: Code(d.U16()), Message: d.String16()}
	return e, d.Done()
}

// CreateTopic asks for a topic with a partition count and configuration.
type CreateTopic struct {
	Name       string
	Partitions uint32
	Config     []KV
}

// Append encodes c.
func (c *CreateTopic) Append(dst []byte) []byte {
	dst = AppendStr16(dst, c.Name)
	dst = appendU32(dst, c.Partitions)
	return appendKVs(dst, c.Config)
}

// DecodeCreateTopic decodes a CreateTopic body.
func DecodeCreateTopic(body []byte) (c CreateTopic, err error) {
	d := NewDecoder(body)
	c.Name, c.Partitions = d.String16(), d.U32()
	c.Config = decodeKVs(&d)
	return c, d.Done()
}

// AppendName encodes the body of DeleteTopic and DescribeTopic: one name.
func AppendName(dst []byte, name string) []byte { return AppendStr16(dst, name) }

// DecodeName decodes a body that is a single Str16 name.
func DecodeName(body []byte) ([]byte, error) {
	d := NewDecoder(body)
	name := d.Str16()
	return name, d.Done()
}

// TopicSummary is one entry of a TopicList.
type TopicSummary struct {
	Name       string
	Partitions uint32
}

// AppendTopicList encodes a TopicList body.
func AppendTopicList(dst []byte, topics []TopicSummary) []byte {
	dst = appendU32(dst, uint32(len(topics)))
	for _, t := range topics {
		dst = AppendStr16(dst, t.Name)
		dst = appendU32(dst, t.Partitions)
	}
	return dst
}

// DecodeTopicList decodes a TopicList body.
func DecodeTopicList(body []byte) ([]TopicSummary, error) {
	d := NewDecoder(body)
	n := d.U32()
	if uint64(n) > uint64(d.Remaining()/6) {
		return nil, errShort
	}
	out := make([]TopicSummary, n)
	for i := range out {
		out[i] = TopicSummary{d.String16(), d.U32()}
	}
	return out, d.Done()
}

// PartitionState says whether a partition serves, in a version 2
// TopicInfo. Values are part of the format; a decoder keeps values it does
// not know, so a newer broker's states reach the application.
type PartitionState uint8

// Partition states.
const (
	// PartitionOnline: the partition takes publishes and serves reads.
	PartitionOnline PartitionState = 0
	// PartitionReadOnly: the partition refuses publishes until the broker
	// restarts (a failed fsync, or a failed write it could not cut off);
	// what it holds stays readable.
	PartitionReadOnly PartitionState = 1
	// PartitionOffline: the partition's log could not be opened at start;
	// it serves neither publishes nor reads until a restart opens it.
	PartitionOffline PartitionState = 2
)

var stateNames = [...]string{PartitionOnline: "online", PartitionReadOnly: "read-only", PartitionOffline: "offline"}

// String names the state; an unknown one prints as "state N".
func (s PartitionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state " + strconv.Itoa(int(s))
}

// PartitionInfo describes one partition in a TopicInfo. State and Reason
// travel only in version 2; a version 1 TopicInfo decodes them as online
// and "".
type PartitionInfo struct {
	ID          uint32
	StartOffset int64 // first offset still held; equals EndOffset when none is
	EndOffset   int64 // the visible end: the offset after the last record readers can see
	Subscribers uint32
	Bytes       int64 // size of the log
	Segments    uint32
	Corrupt     uint32 // offset ranges found corrupt (kept and reported, not removed)
	State       PartitionState
	Reason      string // why the partition is not online; "" when it is
}

// partitionInfoSize is the encoded size of a version 1 PartitionInfo, and
// the least a version 2 one takes (plus the state byte and the reason's
// length).
const partitionInfoSize = 4 + 8 + 8 + 4 + 8 + 4 + 4

// TopicInfo answers DescribeTopic and AlterTopic.
type TopicInfo struct {
	Name       string
	Config     []KV
	Partitions []PartitionInfo
}

// Append encodes t in the layout of protocol version v: version 1 has no
// partition state, so an older peer's strict decoder never meets bytes it
// does not expect.
func (t *TopicInfo) Append(dst []byte, v uint16) []byte {
	dst = AppendStr16(dst, t.Name)
	dst = appendKVs(dst, t.Config)
	dst = appendU32(dst, uint32(len(t.Partitions)))
	for i := range t.Partitions {
		dst = t.Partitions[i].append(dst, v)
	}
	return dst
}

func (p *PartitionInfo) append(dst []byte, v uint16) []byte {
	dst = appendU32(dst, p.ID)
	dst = appendI64(dst, p.StartOffset)
	dst = appendI64(dst, p.EndOffset)
	dst = appendU32(dst, p.Subscribers)
	dst = appendI64(dst, p.Bytes)
	dst = appendU32(dst, p.Segments)
	dst = appendU32(dst, p.Corrupt)
	if v >= 2 {
		dst = append(dst, byte(p.State))
		dst = AppendStr16(dst, p.Reason)
	}
	return dst
}

// DecodeTopicInfo decodes a TopicInfo body in the layout of protocol
// version v.
func DecodeTopicInfo(body []byte, v uint16) (t TopicInfo, err error) {
	d := NewDecoder(body)
	t.Name = d.String16()
	t.Config = decodeKVs(&d)
	n := d.U32()
	size := partitionInfoSize
	if v >= 2 {
		size += 3
	}
	if uint64(n) > uint64(d.Remaining()/size) {
		return t, errShort
	}
	t.Partitions = make([]PartitionInfo, n)
	for i := range t.Partitions {
		p := PartitionInfo{d.U32(), d.I64(), d.I64(), d.U32(), d.I64(), d.U32(), d.U32(), PartitionOnline, ""}
		if v >= 2 {
			p.State, p.Reason = PartitionState(d.U8()), d.String16()
		}
		t.Partitions[i] = p
	}
	return t, d.Done()
}

// BatchView is the decoded body of a Publish or Deliver frame. It aliases
// the frame; nothing is copied.
type BatchView struct {
	Topic     []byte
	Partition int32
	Batch     Batch
	// BatchOffset is where the batch starts within the body, so a receiver
	// that copies the frame can find the batch in its copy.
	BatchOffset int
}

// AppendBatchPrefix appends the topic and partition that precede the record
// batch in a Publish or Deliver body. The batch follows (see BatchBuilder).
func AppendBatchPrefix(dst []byte, topic string, partition int32) []byte {
	return appendI32(AppendStr16(dst, topic), partition)
}

// DecodeBatchView decodes a Publish or Deliver body. It checks the batch
// header but not the records or CRC: see CheckBatch.
func DecodeBatchView(body []byte) (v BatchView, err error) {
	d := NewDecoder(body)
	v.Topic = d.Str16()
	v.Partition = d.I32()
	v.BatchOffset = len(body) - d.Remaining()
	v.Batch = Batch(d.Rest())
	if err = d.Err(); err != nil {
		return v, err
	}
	return v, checkBatchHeader(v.Batch)
}

// PublishAck acknowledges a Publish: the records got offsets
// BaseOffset .. BaseOffset+Count-1 in Partition.
type PublishAck struct {
	Partition  int32
	BaseOffset int64
	Count      uint32
}

// PublishAckSize is the size of a whole PublishAck frame.
const PublishAckSize = HeaderSize + 16

// AppendPublishAck appends a complete PublishAck frame.
func AppendPublishAck(dst []byte, corr uint32, a PublishAck) []byte {
	dst = AppendHeader(dst, TypePublishAck, 0, corr, PublishAckSize-HeaderSize)
	dst = appendI32(dst, a.Partition)
	dst = appendI64(dst, a.BaseOffset)
	return appendU32(dst, a.Count)
}

// DecodePublishAck decodes a PublishAck body.
func DecodePublishAck(body []byte) (a PublishAck, err error) {
	d := NewDecoder(body)
	a.Partition, a.BaseOffset, a.Count = d.I32(), d.I64(), d.U32()
	return a, d.Done()
}

// StartKind says where a subscription or fetch starts.
type StartKind uint8

// Start kinds; values are part of the format.
const (
	StartLatest   StartKind = 0 // the live tail: only what is published from now on
	StartEarliest StartKind = 1 // the first offset the log still holds
	StartOffset   StartKind = 2 // Value is an offset
	StartTime     StartKind = 3 // Value is a timestamp, Unix nanoseconds
)

// Start is a position in a partition's log.
type Start struct {
	Kind  StartKind
	Value int64
}

func appendStart(dst []byte, s Start) []byte { return appendI64(append(dst, byte(s.Kind)), s.Value) }

func decodeStart(d *Decoder) Start {
	s := Start{Kind: StartKind(d.U8()), Value: d.I64()}
	if s.Kind > StartTime && d.err == nil {
		d.err = errStartKind
	}
	return s
}

var errStartKind = &Error{Code: CodeMalformed, Message: "unknown start kind"}

// Subscribe asks for push delivery of a topic's partition, or of every
// partition with PartitionAny, from a start position; deliveries replay
// the log from there and then follow the live tail. Unsubscribe has the
// same body without Resume; its start is ignored.
type Subscribe struct {
	Topic     string
	Partition int32
	Start     Start
	// Resume (version 3) gives partitions an offset of their own to start
	// at instead of Start: where a client that lost its connection left
	// off. It is encoded only when not empty.
	Resume []PartitionStart
}

// Append encodes s.
func (s *Subscribe) Append(dst []byte) []byte {
	dst = appendStart(appendI32(AppendStr16(dst, s.Topic), s.Partition), s.Start)
	if len(s.Resume) > 0 {
		dst = appendU32(dst, uint32(len(s.Resume)))
		for _, r := range s.Resume {
			dst = appendI64(appendI32(dst, r.Partition), r.Offset)
		}
	}
	return dst
}

// DecodeSubscribe decodes an Unsubscribe body, or a Subscribe body without
// resume offsets; the topic aliases body.
func DecodeSubscribe(body []byte) (topic []byte, partition int32, start Start, err error) {
	d := NewDecoder(body)
	topic, partition = d.Str16(), d.I32()
	start = decodeStart(&d)
	return topic, partition, start, d.Done()
}

// DecodeSubscribeResume decodes a Subscribe body that may end with resume
// offsets (version 3); the topic aliases body.
func DecodeSubscribeResume(body []byte) (topic []byte, partition int32, start Start, resume []PartitionStart, err error) {
	d := NewDecoder(body)
	topic, partition = d.Str16(), d.I32()
	start = decodeStart(&d)
	if d.Remaining() > 0 {
		n := d.U32()
		if uint64(n) > uint64(d.Remaining()/12) {
			return topic, partition, start, nil, errShort
		}
		resume = make([]PartitionStart, n)
		for i := range resume {
			resume[i] = PartitionStart{Partition: d.I32(), Offset: d.I64()}
		}
	}
	return topic, partition, start, resume, d.Done()
}

// Fetch asks for the batches of one partition from a start position: at
// most MaxBytes (at least one batch when any is available), waiting up to
// MaxWaitMs for data when there is none yet (a long poll).
type Fetch struct {
	Topic     string
	Partition int32
	Start     Start
	MaxBytes  uint32
	MaxWaitMs uint32
}

// Append encodes f.
func (f *Fetch) Append(dst []byte) []byte {
	dst = appendStart(appendI32(AppendStr16(dst, f.Topic), f.Partition), f.Start)
	return appendU32(appendU32(dst, f.MaxBytes), f.MaxWaitMs)
}

// DecodeFetch decodes a Fetch body.
func DecodeFetch(body []byte) (f Fetch, err error) {
	d := NewDecoder(body)
	f.Topic, f.Partition = d.String16(), d.I32()
	f.Start = decodeStart(&d)
	f.MaxBytes, f.MaxWaitMs = d.U32(), d.U32()
	return f, d.Done()
}

// FetchResultHeader precedes the batches of a FetchResult: the partition,
// the log's first offset and visible end, and the offset the fetch
// resolved its start to. The batches follow back to back (each carries
// its length); the first may begin before Offset, and the reader skips
// records below it.
type FetchResultHeader struct {
	Partition   int32
	StartOffset int64
	EndOffset   int64
	Offset      int64
}

// FetchResultHeaderSize is the encoded size of FetchResultHeader.
const FetchResultHeaderSize = 28

// AppendFetchResultHeader appends the fixed part of a FetchResult body.
func AppendFetchResultHeader(dst []byte, h FetchResultHeader) []byte {
	dst = appendI32(dst, h.Partition)
	dst = appendI64(dst, h.StartOffset)
	dst = appendI64(dst, h.EndOffset)
	return appendI64(dst, h.Offset)
}

// DecodeFetchResult splits a FetchResult body into its header and batches,
// checking each batch's header (not its CRC).
func DecodeFetchResult(body []byte) (h FetchResultHeader, batches []Batch, err error) {
	d := NewDecoder(body)
	h = FetchResultHeader{Partition: d.I32(), StartOffset: d.I64(), EndOffset: d.I64(), Offset: d.I64()}
	rest := d.Rest()
	if err := d.Err(); err != nil {
		return h, nil, err
	}
	for len(rest) > 0 {
		n := BatchSize(rest)
		if n < BatchHeaderSize || n > len(rest) {
			return h, nil, errBatchShort
		}
		if err := checkBatchHeader(rest[:n]); err != nil {
			return h, nil, err
		}
		batches = append(batches, Batch(rest[:n:n]))
		rest = rest[n:]
	}
	return h, batches, nil
}

// SubscribeOK answers a Subscribe: the topic's partition count and, for
// each subscribed partition, the offset its deliveries start at (records
// below it in the first delivered batch are to be skipped).
type SubscribeOK struct {
	Partitions uint32
	Starts     []PartitionStart
	// Durable (version 3) says the topic's log is on disk, so its offsets
	// survive a broker restart; a memory topic's start again at 0.
	Durable bool
}

// PartitionStart is where a subscription starts in one partition.
type PartitionStart struct {
	Partition int32
	Offset    int64
}

// Append encodes s in the layout of protocol version v.
func (s *SubscribeOK) Append(dst []byte, v uint16) []byte {
	dst = appendU32(dst, s.Partitions)
	dst = appendU32(dst, uint32(len(s.Starts)))
	for _, st := range s.Starts {
		dst = appendI64(appendI32(dst, st.Partition), st.Offset)
	}
	if v >= 3 {
		var durable uint8
		if s.Durable {
			durable = 1
		}
		dst = append(dst, durable)
	}
	return dst
}

// DecodeSubscribeOK decodes a SubscribeOK body of protocol version v.
func DecodeSubscribeOK(body []byte, v uint16) (s SubscribeOK, err error) {
	d := NewDecoder(body)
	s.Partitions = d.U32()
	n := d.U32()
	if uint64(n) > uint64(d.Remaining()/12) {
		return s, errShort
	}
	s.Starts = make([]PartitionStart, n)
	for i := range s.Starts {
		s.Starts[i] = PartitionStart{Partition: d.I32(), Offset: d.I64()}
	}
	if v >= 3 {
		s.Durable = d.U8() != 0
	}
	return s, d.Done()
}
