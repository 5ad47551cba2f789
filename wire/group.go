package wire

import "strconv"

// Consumer group frames. A member joins with JoinGroup and gets JoinResult;
// the broker then pushes an Assignment (correlation id 0) whenever the
// member's partitions change, and delivers its partitions' batches as
// Deliver frames (and, in message ack mode, Redeliver frames). The member
// heartbeats, commits (offset mode) or acks and nacks (message mode), and
// leaves with LeaveGroup.

// AckMode says how a group member confirms what it processed.
type AckMode uint8

// Ack modes; values are part of the format.
const (
	AckNone    AckMode = 0 // at most once: nothing is confirmed
	AckOffset  AckMode = 1 // at least once: the member commits offsets
	AckMessage AckMode = 2 // each message is acked or nacked; unacked ones are redelivered
)

// String names the mode as docs/PROTOCOL.md and the admin API spell it:
// none, offset, message ("mode N" for a value the format does not know).
func (m AckMode) String() string {
	switch m {
	case AckNone:
		return "none"
	case AckOffset:
		return "offset"
	case AckMessage:
		return "message"
	}
	return "mode " + strconv.Itoa(int(m))
}

// JoinGroup asks to join a group consuming a topic. An empty Member asks
// for a new member id.
type JoinGroup struct {
	Group, Topic     string
	Member           string
	SessionTimeoutMs uint32
	Mode             AckMode
	Start            Start    // for partitions the group has never committed
	AckWaitMs        uint32   // message mode: redeliver after this
	MaxDeliveries    uint32   // message mode: then dead-letter
	MaxUnacked       uint32   // message mode: messages in flight per member
	BackoffMs        []uint32 // message mode: delay before the n-th redelivery
	DLQ              string   // message mode: dead-letter topic; empty means "<topic>.dlq"
}

// Append encodes j.
func (j *JoinGroup) Append(dst []byte) []byte {
	dst = AppendStr16(dst, j.Group)
	dst = AppendStr16(dst, j.Topic)
	dst = AppendStr16(dst, j.Member)
	dst = appendU32(dst, j.SessionTimeoutMs)
	dst = append(dst, byte(j.Mode))
	dst = appendStart(dst, j.Start)
	dst = appendU32(dst, j.AckWaitMs)
	dst = appendU32(dst, j.MaxDeliveries)
	dst = appendU32(dst, j.MaxUnacked)
	dst = appendU16(dst, uint16(len(j.BackoffMs)))
	for _, b := range j.BackoffMs {
		dst = appendU32(dst, b)
	}
	return AppendStr16(dst, j.DLQ)
}

var errAckMode = &Error{Code: CodeMalformed, Message: "unknown ack mode"}

// DecodeJoinGroup decodes a JoinGroup body.
func DecodeJoinGroup(body []byte) (j JoinGroup, err error) {
	d := NewDecoder(body)
	j.Group, j.Topic, j.Member = d.String16(), d.String16(), d.String16()
	j.SessionTimeoutMs = d.U32()
	j.Mode = AckMode(d.U8())
	j.Start = decodeStart(&d)
	j.AckWaitMs, j.MaxDeliveries, j.MaxUnacked = d.U32(), d.U32(), d.U32()
	n := int(d.U16())
	if n > d.Remaining()/4 {
		return j, errShort
	}
	for range n {
		j.BackoffMs = append(j.BackoffMs, d.U32())
	}
	j.DLQ = d.String16()
	if j.Mode > AckMessage && d.err == nil {
		d.err = errAckMode
	}
	return j, d.Done()
}

// JoinResult answers JoinGroup: the member id to use from now on.
type JoinResult struct {
	Member           string
	SessionTimeoutMs uint32
}

// Append encodes r.
func (r *JoinResult) Append(dst []byte) []byte {
	return appendU32(AppendStr16(dst, r.Member), r.SessionTimeoutMs)
}

// DecodeJoinResult decodes a JoinResult body.
func DecodeJoinResult(body []byte) (r JoinResult, err error) {
	d := NewDecoder(body)
	r.Member, r.SessionTimeoutMs = d.String16(), d.U32()
	return r, d.Done()
}

// MemberRef names a member in Heartbeat and LeaveGroup, and prefixes
// Commit, Ack and Nack.
type MemberRef struct {
	Group, Member string
	Generation    uint32
}

// Append encodes m.
func (m *MemberRef) Append(dst []byte) []byte {
	return appendU32(AppendStr16(AppendStr16(dst, m.Group), m.Member), m.Generation)
}

func decodeMemberRef(d *Decoder) MemberRef {
	return MemberRef{Group: d.String16(), Member: d.String16(), Generation: d.U32()}
}

// DecodeMemberRef decodes a Heartbeat or LeaveGroup body.
func DecodeMemberRef(body []byte) (MemberRef, error) {
	d := NewDecoder(body)
	m := decodeMemberRef(&d)
	return m, d.Done()
}

// PartitionOffset is a partition and an offset in it.
type PartitionOffset struct {
	Partition int32
	Offset    int64
}

func appendPartitionOffsets(dst []byte, ps []PartitionOffset) []byte {
	dst = appendU16(dst, uint16(len(ps)))
	for _, p := range ps {
		dst = appendI64(appendI32(dst, p.Partition), p.Offset)
	}
	return dst
}

func decodePartitionOffsets(d *Decoder) []PartitionOffset {
	n := int(d.U16())
	if n > d.Remaining()/12 {
		d.take(-1)
		return nil
	}
	out := make([]PartitionOffset, n)
	for i := range out {
		out[i] = PartitionOffset{Partition: d.I32(), Offset: d.I64()}
	}
	return out
}

// Commit records offsets for a member's partitions: each Offset is the
// next offset to consume.
type Commit struct {
	MemberRef
	Offsets []PartitionOffset
}

// Append encodes c.
func (c *Commit) Append(dst []byte) []byte {
	return appendPartitionOffsets(c.MemberRef.Append(dst), c.Offsets)
}

// DecodeCommit decodes a Commit body.
func DecodeCommit(body []byte) (c Commit, err error) {
	d := NewDecoder(body)
	c.MemberRef = decodeMemberRef(&d)
	c.Offsets = decodePartitionOffsets(&d)
	return c, d.Done()
}

// OffsetRange is the half-open range [From, To).
type OffsetRange struct{ From, To int64 }

// Ack confirms ranges of offsets of one partition (message mode). Acks are
// not answered unless they fail.
type Ack struct {
	MemberRef
	Partition int32
	Ranges    []OffsetRange
}

// Append encodes a.
func (a *Ack) Append(dst []byte) []byte {
	dst = appendI32(a.MemberRef.Append(dst), a.Partition)
	dst = appendU16(dst, uint16(len(a.Ranges)))
	for _, r := range a.Ranges {
		dst = appendI64(appendI64(dst, r.From), r.To)
	}
	return dst
}

// DecodeAck decodes an Ack body.
func DecodeAck(body []byte) (a Ack, err error) {
	d := NewDecoder(body)
	a.MemberRef = decodeMemberRef(&d)
	a.Partition = d.I32()
	n := int(d.U16())
	if n > d.Remaining()/16 {
		return a, errShort
	}
	a.Ranges = make([]OffsetRange, n)
	for i := range a.Ranges {
		a.Ranges[i] = OffsetRange{From: d.I64(), To: d.I64()}
	}
	return a, d.Done()
}

// Nack rejects one message for redelivery after DelayMs (0: the group's
// backoff), with a reason kept for the dead-letter headers.
type Nack struct {
	MemberRef
	Partition int32
	Offset    int64
	DelayMs   uint32
	Reason    string
}

// Append encodes n.
func (n *Nack) Append(dst []byte) []byte {
	dst = appendI64(appendI32(n.MemberRef.Append(dst), n.Partition), n.Offset)
	return AppendStr16(appendU32(dst, n.DelayMs), n.Reason)
}

// DecodeNack decodes a Nack body.
func DecodeNack(body []byte) (n Nack, err error) {
	d := NewDecoder(body)
	n.MemberRef = decodeMemberRef(&d)
	n.Partition, n.Offset, n.DelayMs, n.Reason = d.I32(), d.I64(), d.U32(), d.String16()
	return n, d.Done()
}

// Assignment tells a member its partitions in a generation, each with the
// offset its deliveries start at.
type Assignment struct {
	Group      string
	Generation uint32
	Partitions []PartitionOffset
}

// Append encodes a.
func (a *Assignment) Append(dst []byte) []byte {
	return appendPartitionOffsets(appendU32(AppendStr16(dst, a.Group), a.Generation), a.Partitions)
}

// DecodeAssignment decodes an Assignment body.
func DecodeAssignment(body []byte) (a Assignment, err error) {
	d := NewDecoder(body)
	a.Group, a.Generation = d.String16(), d.U32()
	a.Partitions = decodePartitionOffsets(&d)
	return a, d.Done()
}

// RedeliverPrefix precedes the batch of a Redeliver frame: the topic and
// partition (as in Deliver), the delivery attempt, and the offsets of the
// batch to hand to the application again (the others were acked).
type RedeliverPrefix struct {
	Topic     string
	Partition int32
	Attempt   uint32
	Offsets   []int64
}

// AppendRedeliverPrefix appends the fields before the batch.
func AppendRedeliverPrefix(dst []byte, r RedeliverPrefix) []byte {
	dst = appendU32(appendI32(AppendStr16(dst, r.Topic), r.Partition), r.Attempt)
	dst = appendU16(dst, uint16(len(r.Offsets)))
	for _, o := range r.Offsets {
		dst = appendI64(dst, o)
	}
	return dst
}

// DecodeRedeliver decodes a Redeliver body; the batch header is checked.
func DecodeRedeliver(body []byte) (r RedeliverPrefix, b Batch, err error) {
	d := NewDecoder(body)
	r.Topic, r.Partition, r.Attempt = d.String16(), d.I32(), d.U32()
	n := int(d.U16())
	if n > d.Remaining()/8 {
		return r, nil, errShort
	}
	r.Offsets = make([]int64, n)
	for i := range r.Offsets {
		r.Offsets[i] = d.I64()
	}
	b = Batch(d.Rest())
	if err := d.Err(); err != nil {
		return r, nil, err
	}
	return r, b, checkBatchHeader(b)
}

// GroupSummary is one entry of a GroupList.
type GroupSummary struct {
	Group, Topic string
	Members      uint32
}

// AppendGroupList encodes a GroupList body.
func AppendGroupList(dst []byte, gs []GroupSummary) []byte {
	dst = appendU32(dst, uint32(len(gs)))
	for _, g := range gs {
		dst = appendU32(AppendStr16(AppendStr16(dst, g.Group), g.Topic), g.Members)
	}
	return dst
}

// DecodeGroupList decodes a GroupList body.
func DecodeGroupList(body []byte) ([]GroupSummary, error) {
	d := NewDecoder(body)
	n := d.U32()
	if uint64(n) > uint64(d.Remaining()/8) {
		return nil, errShort
	}
	out := make([]GroupSummary, n)
	for i := range out {
		out[i] = GroupSummary{Group: d.String16(), Topic: d.String16(), Members: d.U32()}
	}
	return out, d.Done()
}

// GroupPartition describes one partition of a group.
type GroupPartition struct {
	Partition int32
	Owner     string // member id, empty when unassigned
	Committed int64  // next offset to consume, -1 when nothing committed
	End       int64  // the partition's visible end
	Lag       int64  // End - Committed; -1 when nothing is committed
	Pending   uint32 // message mode: delivered and not yet acked
}

// GroupInfo describes a group.
type GroupInfo struct {
	Group, Topic string
	Generation   uint32
	Mode         AckMode
	Members      []string
	Partitions   []GroupPartition
}

// Append encodes g.
func (g *GroupInfo) Append(dst []byte) []byte {
	dst = appendU32(AppendStr16(AppendStr16(dst, g.Group), g.Topic), g.Generation)
	dst = append(dst, byte(g.Mode))
	dst = appendU16(dst, uint16(len(g.Members)))
	for _, m := range g.Members {
		dst = AppendStr16(dst, m)
	}
	dst = appendU32(dst, uint32(len(g.Partitions)))
	for _, p := range g.Partitions {
		dst = AppendStr16(appendI32(dst, p.Partition), p.Owner)
		dst = appendI64(appendI64(appendI64(dst, p.Committed), p.End), p.Lag)
		dst = appendU32(dst, p.Pending)
	}
	return dst
}

// DecodeGroupInfo decodes a GroupInfo body.
func DecodeGroupInfo(body []byte) (g GroupInfo, err error) {
	d := NewDecoder(body)
	g.Group, g.Topic, g.Generation = d.String16(), d.String16(), d.U32()
	g.Mode = AckMode(d.U8())
	n := int(d.U16())
	if n > d.Remaining()/2 {
		return g, errShort
	}
	for range n {
		g.Members = append(g.Members, d.String16())
	}
	np := d.U32()
	if uint64(np) > uint64(d.Remaining()/34) {
		return g, errShort
	}
	g.Partitions = make([]GroupPartition, np)
	for i := range g.Partitions {
		g.Partitions[i] = GroupPartition{Partition: d.I32(), Owner: d.String16(), Committed: d.I64(),
			End: d.I64(), Lag: d.I64(), Pending: d.U32()}
	}
	return g, d.Done()
}

// ResetGroup moves the committed offsets of a group with no members: of
// every partition to Start, or, when Partitions is not empty, of the
// listed partitions only, each to its own start (Start is then ignored;
// the other partitions keep theirs).
type ResetGroup struct {
	Group      string
	Start      Start
	Partitions []PartitionTarget
}

// PartitionTarget is one partition's target in a ResetGroup.
type PartitionTarget struct {
	Partition int32
	Start     Start
}

// partitionTargetSize is the encoded size of a PartitionTarget.
const partitionTargetSize = 4 + 1 + 8

// FlagResetPartitions on ResetGroup says the body ends with a partition
// list (ResetGroup.Partitions). An older broker ignores the flag, reads
// the group and start, and refuses the list as trailing bytes (MALFORMED):
// it never moves every partition when a few were asked for.
const FlagResetPartitions uint8 = 0x01

// Flags is the frame flags r is sent with.
func (r *ResetGroup) Flags() uint8 {
	if len(r.Partitions) > 0 {
		return FlagResetPartitions
	}
	return 0
}

// Append encodes r; the partition list, if any, follows the start.
func (r *ResetGroup) Append(dst []byte) []byte {
	dst = appendStart(AppendStr16(dst, r.Group), r.Start)
	if len(r.Partitions) == 0 {
		return dst
	}
	dst = appendU32(dst, uint32(len(r.Partitions)))
	for _, p := range r.Partitions {
		dst = appendStart(appendU32(dst, uint32(p.Partition)), p.Start)
	}
	return dst
}

// DecodeResetGroup decodes a ResetGroup body sent without
// FlagResetPartitions.
func DecodeResetGroup(body []byte) (r ResetGroup, err error) {
	d := NewDecoder(body)
	r.Group = d.String16()
	r.Start = decodeStart(&d)
	return r, d.Done()
}

// DecodeResetPartitions decodes a ResetGroup body sent with
// FlagResetPartitions; its list must not be empty.
func DecodeResetPartitions(body []byte) (r ResetGroup, err error) {
	d := NewDecoder(body)
	r.Group = d.String16()
	r.Start = decodeStart(&d)
	n := d.U32()
	if d.err != nil {
		return r, d.err
	}
	if n == 0 {
		return r, errEmptyResetList
	}
	if uint64(n) > uint64(d.Remaining()/partitionTargetSize) {
		return r, errShort
	}
	r.Partitions = make([]PartitionTarget, n)
	for i := range r.Partitions {
		r.Partitions[i] = PartitionTarget{Partition: d.I32(), Start: decodeStart(&d)}
	}
	return r, d.Done()
}

var errEmptyResetList = &Error{Code: CodeMalformed, Message: "ResetGroup partition list is empty"}
