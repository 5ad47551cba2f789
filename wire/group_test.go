package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// redeliverBody is a decoded Redeliver body: the prefix and the batch.
type redeliverBody struct {
	Prefix RedeliverPrefix
	Batch  Batch
}

// groupCodec decodes one kind of consumer-group body and encodes a decoded
// value again, so every check below runs over every decoder.
type groupCodec struct {
	decode func(body []byte) (any, error)
	encode func(v any) []byte
}

var groupCodecs = map[string]groupCodec{
	"JoinGroup": {
		func(b []byte) (any, error) { return DecodeJoinGroup(b) },
		func(v any) []byte { j := v.(JoinGroup); return j.Append(nil) }},
	"JoinResult": {
		func(b []byte) (any, error) { return DecodeJoinResult(b) },
		func(v any) []byte { r := v.(JoinResult); return r.Append(nil) }},
	"MemberRef": {
		func(b []byte) (any, error) { return DecodeMemberRef(b) },
		func(v any) []byte { m := v.(MemberRef); return m.Append(nil) }},
	"Commit": {
		func(b []byte) (any, error) { return DecodeCommit(b) },
		func(v any) []byte { c := v.(Commit); return c.Append(nil) }},
	"Ack": {
		func(b []byte) (any, error) { return DecodeAck(b) },
		func(v any) []byte { a := v.(Ack); return a.Append(nil) }},
	"Nack": {
		func(b []byte) (any, error) { return DecodeNack(b) },
		func(v any) []byte { n := v.(Nack); return n.Append(nil) }},
	"Assignment": {
		func(b []byte) (any, error) { return DecodeAssignment(b) },
		func(v any) []byte { a := v.(Assignment); return a.Append(nil) }},
	"Redeliver": {
		func(b []byte) (any, error) {
			r, batch, err := DecodeRedeliver(b)
			return redeliverBody{r, batch}, err
		},
		func(v any) []byte {
			r := v.(redeliverBody)
			return append(AppendRedeliverPrefix(nil, r.Prefix), r.Batch...)
		}},
	"GroupList": {
		func(b []byte) (any, error) { return DecodeGroupList(b) },
		func(v any) []byte { return AppendGroupList(nil, v.([]GroupSummary)) }},
	"GroupInfo": {
		func(b []byte) (any, error) { return DecodeGroupInfo(b) },
		func(v any) []byte { g := v.(GroupInfo); return g.Append(nil) }},
	"ResetGroup": {
		func(b []byte) (any, error) { return DecodeResetGroup(b) },
		func(v any) []byte { r := v.(ResetGroup); return r.Append(nil) }},
	"ResetPartitions": {
		func(b []byte) (any, error) { return DecodeResetPartitions(b) },
		func(v any) []byte { r := v.(ResetGroup); return r.Append(nil) }},
}

type groupCase struct {
	name, codec string
	v           any
}

// maxStr is the longest string a str16 holds.
var maxStr = strings.Repeat("s", math.MaxUint16)

// groupCases are valid values of every group body: empty lists, the longest
// strings and lists, extreme integers, every start kind and ack mode.
func groupCases(t testing.TB) []groupCase {
	batch := buildBatch(t, nil, []testRecord{{ts: 1, value: []byte("a")},
		{ts: 2, key: []byte("k"), value: []byte("b")}, {ts: 3, value: []byte("c")}})
	Batch(batch).SetBaseOffset(100)
	maxBackoffs := make([]uint32, math.MaxUint16)
	for i := range maxBackoffs {
		maxBackoffs[i] = uint32(i) * 7
	}
	return []groupCase{
		{"join/offset earliest", "JoinGroup", JoinGroup{Group: "g", Topic: "orders",
			SessionTimeoutMs: 10_000, Mode: AckOffset, Start: Start{Kind: StartEarliest}}},
		{"join/none latest rejoin", "JoinGroup", JoinGroup{Group: "g", Topic: "t", Member: "m-1",
			Mode: AckNone, Start: Start{Kind: StartLatest}}},
		{"join/message full", "JoinGroup", JoinGroup{Group: "workers", Topic: "jobs", Member: "m-2",
			SessionTimeoutMs: 30_000, Mode: AckMessage, Start: Start{Kind: StartOffset, Value: 42},
			AckWaitMs: 30_000, MaxDeliveries: 5, MaxUnacked: 1000,
			BackoffMs: []uint32{100, 1_000, 10_000}, DLQ: "jobs.dead"}},
		{"join/message time start default dlq", "JoinGroup", JoinGroup{Group: "g", Topic: "t",
			Mode: AckMessage, Start: Start{Kind: StartTime, Value: 1_700_000_000_000_000_000},
			BackoffMs: []uint32{0}}},
		{"join/dlq without backoff", "JoinGroup", JoinGroup{Group: "g", Topic: "t", Mode: AckMessage,
			DLQ: "t.dlq"}},
		{"join/extremes", "JoinGroup", JoinGroup{Group: maxStr, Topic: maxStr, Member: maxStr,
			SessionTimeoutMs: math.MaxUint32, Mode: AckMessage, Start: Start{Kind: StartOffset, Value: math.MaxInt64},
			AckWaitMs: math.MaxUint32, MaxDeliveries: math.MaxUint32, MaxUnacked: math.MaxUint32,
			BackoffMs: []uint32{math.MaxUint32, 0}, DLQ: maxStr}},
		{"join/longest backoff list", "JoinGroup", JoinGroup{Group: "g", Topic: "t", Mode: AckMessage,
			BackoffMs: maxBackoffs}},

		{"join result/empty", "JoinResult", JoinResult{}},
		{"join result/member", "JoinResult", JoinResult{Member: "m-7f3a", SessionTimeoutMs: 45_000}},
		{"join result/extremes", "JoinResult", JoinResult{Member: maxStr, SessionTimeoutMs: math.MaxUint32}},

		{"member/empty", "MemberRef", MemberRef{}},
		{"member/heartbeat", "MemberRef", MemberRef{Group: "g", Member: "m-1", Generation: 7}},
		{"member/extremes", "MemberRef", MemberRef{Group: maxStr, Member: maxStr, Generation: math.MaxUint32}},

		{"commit/no offsets", "Commit", Commit{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 1}}},
		{"commit/offsets", "Commit", Commit{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 2},
			Offsets: []PartitionOffset{{0, 0}, {3, 1 << 40}, {math.MaxInt32, math.MaxInt64}, {-1, math.MinInt64}}}},
		{"commit/longest list", "Commit", Commit{MemberRef: MemberRef{Group: "g"},
			Offsets: make([]PartitionOffset, math.MaxUint16)}},

		{"ack/no ranges", "Ack", Ack{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 3}, Partition: 1}},
		{"ack/ranges", "Ack", Ack{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 3}, Partition: 2,
			Ranges: []OffsetRange{{0, 10}, {15, 16}, {math.MinInt64, math.MaxInt64}}}},

		{"nack/default backoff", "Nack", Nack{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 1},
			Offset: 5}},
		{"nack/delay and reason", "Nack", Nack{MemberRef: MemberRef{Group: "g", Member: "m", Generation: 9},
			Partition: 3, Offset: 1 << 50, DelayMs: 5_000, Reason: "database timeout"}},
		{"nack/extremes", "Nack", Nack{MemberRef: MemberRef{Group: maxStr, Member: maxStr, Generation: math.MaxUint32},
			Partition: math.MinInt32, Offset: math.MinInt64, DelayMs: math.MaxUint32, Reason: maxStr}},

		{"assignment/revoke all", "Assignment", Assignment{Group: "g", Generation: 4}},
		{"assignment/partitions", "Assignment", Assignment{Group: "g", Generation: 5,
			Partitions: []PartitionOffset{{0, 10}, {2, 0}, {7, math.MaxInt64}}}},

		{"redeliver/some offsets", "Redeliver", redeliverBody{
			RedeliverPrefix{Topic: "t", Partition: 2, Attempt: 2, Offsets: []int64{100, 102}}, batch}},
		{"redeliver/no offsets", "Redeliver", redeliverBody{RedeliverPrefix{Topic: "t"}, batch}},
		{"redeliver/extremes", "Redeliver", redeliverBody{RedeliverPrefix{Topic: maxStr,
			Partition: math.MaxInt32, Attempt: math.MaxUint32, Offsets: []int64{math.MinInt64, math.MaxInt64}}, batch}},

		{"group list/empty", "GroupList", []GroupSummary{}},
		{"group list/entries", "GroupList", []GroupSummary{{"a", "t1", 0}, {"b", "t2", 3}}},
		{"group list/smallest entries", "GroupList", []GroupSummary{{}, {}}}, // 8 bytes each
		{"group list/extremes", "GroupList", []GroupSummary{{maxStr, maxStr, math.MaxUint32}}},

		{"group info/empty", "GroupInfo", GroupInfo{Group: "g", Topic: "t"}},
		{"group info/message", "GroupInfo", GroupInfo{Group: "g", Topic: "t", Generation: 12, Mode: AckMessage,
			Members: []string{"m-1", "m-2"},
			Partitions: []GroupPartition{{0, "m-1", 10, 20, 10, 3}, {1, "", -1, 5, 5, 0},
				{2, "m-2", math.MaxInt64, math.MinInt64, -1, math.MaxUint32}}}},
		{"group info/smallest entries", "GroupInfo", GroupInfo{Members: []string{"", ""},
			Partitions: []GroupPartition{{Partition: 0, Committed: -1}, {Partition: 1, Committed: -1}}}}, // 2 and 34 bytes each
		{"group info/extremes", "GroupInfo", GroupInfo{Group: maxStr, Topic: maxStr, Generation: math.MaxUint32,
			Mode: AckOffset, Members: []string{maxStr, ""}, Partitions: []GroupPartition{{Owner: maxStr}}}},

		{"reset/latest", "ResetGroup", ResetGroup{Group: "g", Start: Start{Kind: StartLatest}}},
		{"reset/earliest", "ResetGroup", ResetGroup{Group: "g", Start: Start{Kind: StartEarliest}}},
		{"reset/offset", "ResetGroup", ResetGroup{Group: "g", Start: Start{Kind: StartOffset, Value: 7}}},
		{"reset/time", "ResetGroup", ResetGroup{Group: maxStr, Start: Start{Kind: StartTime, Value: -1}}},
		{"reset/one partition", "ResetPartitions", ResetGroup{Group: "g", Start: Start{Kind: StartEarliest},
			Partitions: []PartitionTarget{{Partition: 3, Start: Start{Kind: StartOffset, Value: 100}}}}},
		{"reset/partitions", "ResetPartitions", ResetGroup{Group: maxStr, Start: Start{Kind: StartEarliest},
			Partitions: []PartitionTarget{{0, Start{Kind: StartLatest}}, {math.MaxInt32, Start{Kind: StartTime, Value: math.MinInt64}},
				{-1, Start{Kind: StartOffset, Value: math.MaxInt64}}}}},
	}
}

func TestGroupRoundTrip(t *testing.T) {
	for _, c := range groupCases(t) {
		t.Run(c.name, func(t *testing.T) {
			codec := groupCodecs[c.codec]
			body := codec.encode(c.v)
			got, err := codec.decode(body)
			require.NoError(t, err)
			require.Equal(t, emptyAsNil(c.v), emptyAsNil(got))
			require.Equal(t, body, codec.encode(got))
		})
	}
}

// TestGroupTruncated cuts every valid body at every point (bodies longer
// than 4 KiB at their first and last 300 bytes and every 509th byte, to
// keep the test fast): each cut must fail, not panic and not decode.
func TestGroupTruncated(t *testing.T) {
	for _, c := range groupCases(t) {
		t.Run(c.name, func(t *testing.T) {
			codec := groupCodecs[c.codec]
			body := codec.encode(c.v)
			for cut := range len(body) {
				if len(body) > 4096 && cut > 300 && cut < len(body)-300 && cut%509 != 0 {
					continue
				}
				_, err := codec.decode(body[:cut])
				requireBadBody(t, c.codec, err, "cut at %d of %d", cut, len(body))
			}
		})
	}
}

func TestGroupTrailingBytes(t *testing.T) {
	for _, c := range groupCases(t) {
		t.Run(c.name, func(t *testing.T) {
			codec := groupCodecs[c.codec]
			body := codec.encode(c.v)
			for _, extra := range [][]byte{{0}, {1}, make([]byte, 16)} {
				_, err := codec.decode(append(body[:len(body):len(body)], extra...))
				requireBadBody(t, c.codec, err, "%d trailing bytes", len(extra))
			}
		})
	}
}

// requireBadBody checks a decoder's error for a body of the wrong size.
// Redeliver's batch runs to the end of the body, so a cut or extra byte
// there shows as a batch whose length field does not match.
func requireBadBody(t *testing.T, codec string, err error, msgAndArgs ...any) {
	t.Helper()
	if codec == "Redeliver" && !errors.Is(err, ErrMalformed) {
		require.ErrorIs(t, err, ErrCorruptBatch, msgAndArgs...)
		return
	}
	require.ErrorIs(t, err, ErrMalformed, msgAndArgs...)
}

func TestJoinGroupRejectsUnknownEnums(t *testing.T) {
	for _, mode := range []AckMode{AckMessage + 1, 0x7f, 0xff} {
		_, err := DecodeJoinGroup((&JoinGroup{Group: "g", Topic: "t", Mode: mode}).Append(nil))
		require.ErrorIs(t, err, ErrMalformed, "mode %d", mode)
		require.ErrorContains(t, err, "ack mode")
	}
	_, err := DecodeJoinGroup((&JoinGroup{Group: "g", Topic: "t", Start: Start{Kind: StartTime + 1}}).Append(nil))
	require.ErrorContains(t, err, "start kind")
	_, err = DecodeResetGroup((&ResetGroup{Group: "g", Start: Start{Kind: 0xff}}).Append(nil))
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "start kind")
	// A short body is reported as short, not as a bad mode read as 0 or past the end.
	body := (&JoinGroup{Group: "g", Topic: "t", Mode: 9}).Append(nil)
	_, err = DecodeJoinGroup(body[:len(body)-1])
	require.ErrorContains(t, err, "too short")
}

// TestGroupHostileCounts sends list counts far beyond the body: decoders
// must refuse them from the remaining size instead of allocating.
func TestGroupHostileCounts(t *testing.T) {
	ref := (&MemberRef{Group: "g", Member: "m"}).Append(nil)
	u16max := []byte{0xff, 0xff}
	u32max := []byte{0xff, 0xff, 0xff, 0xff}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	join := (&JoinGroup{Group: "g", Topic: "t", Mode: AckMessage}).Append(nil)
	info := (&GroupInfo{Group: "g", Topic: "t"}).Append(nil)
	reset := (&ResetGroup{Group: "g"}).Append(nil)
	bodies := []struct {
		codec string
		body  []byte
	}{
		{"JoinGroup", cat(join[:len(join)-4], u16max, make([]byte, 8))}, // backoff count
		{"Commit", cat(ref, u16max, make([]byte, 20))},
		{"Ack", cat(ref, []byte{0, 0, 0, 1}, u16max, make([]byte, 30))},
		{"Assignment", cat(AppendStr16(nil, "g"), []byte{0, 0, 0, 1}, u16max, make([]byte, 20))},
		{"Redeliver", cat(AppendStr16(nil, "t"), make([]byte, 8), u16max, make([]byte, 60))},
		{"GroupList", cat(u32max, make([]byte, 12))},
		{"GroupInfo", cat(info[:len(info)-6], u16max, make([]byte, 8))},  // member count
		{"GroupInfo", cat(info[:len(info)-4], u32max, make([]byte, 60))}, // partition count
		{"ResetPartitions", cat(reset, u32max, make([]byte, 26))},
		{"ResetPartitions", cat(reset, make([]byte, 4))}, // an empty list
	}
	for _, c := range bodies {
		_, err := groupCodecs[c.codec].decode(c.body)
		require.ErrorIs(t, err, ErrMalformed, "%s %x", c.codec, c.body)
	}
}

func TestDecodeRedeliver(t *testing.T) {
	// The broker builds a Redeliver the way it builds a Deliver: the
	// prefix, then the stored batch, into one frame.
	prefix := RedeliverPrefix{Topic: "orders", Partition: 3, Attempt: 2, Offsets: []int64{101, 103}}
	buf, start := StartFrame(nil, TypeRedeliver, 0, 0)
	buf = AppendRedeliverPrefix(buf, prefix)
	batchAt := len(buf)
	buf = buildBatch(t, buf, []testRecord{{ts: 1, value: []byte("a")}, {ts: 2, value: []byte("b")},
		{ts: 3, key: []byte("k"), value: []byte("c"), headers: []RecordHeader{{"h", []byte("v")}}},
		{ts: 4, value: []byte("d")}})
	Batch(buf[batchAt:]).SetBaseOffset(100)
	FinishFrame(buf, start)

	f, n, err := ReadFrame(buf, DefaultMaxFrameBytes)
	require.NoError(t, err)
	require.Equal(t, len(buf), n)
	require.Equal(t, TypeRedeliver, f.Type)
	require.Equal(t, uint32(0), f.Corr)
	r, b, err := DecodeRedeliver(f.Body)
	require.NoError(t, err)
	require.Equal(t, prefix, r)
	count, err := CheckBatch(b, 1<<20, DefaultMaxFrameBytes)
	require.NoError(t, err)
	require.Equal(t, 4, count)
	require.Equal(t, int64(100), b.BaseOffset())

	// What a client does: hand over only the listed offsets.
	want := map[int64]bool{}
	for _, o := range r.Offsets {
		want[o] = true
	}
	var values []string
	it := b.Records()
	var rec Record
	for it.Next(&rec) {
		if want[rec.Offset] {
			values = append(values, string(rec.Value))
		}
	}
	require.NoError(t, it.Err())
	require.Equal(t, []string{"b", "d"}, values)
}

func TestDecodeRedeliverCorruptBatch(t *testing.T) {
	prefix := AppendRedeliverPrefix(nil, RedeliverPrefix{Topic: "t", Partition: 1, Attempt: 3, Offsets: []int64{0}})
	good := buildBatch(t, nil, []testRecord{{ts: 1, value: []byte("abc")}})
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte{}, good...)
		f(b)
		return b
	}
	batches := map[string][]byte{
		"missing":      nil,
		"short header": good[:BatchHeaderSize-1],
		"bad magic":    mutate(func(b []byte) { b[batchOffMagic] = 2 }),
		"attributes":   mutate(func(b []byte) { b[batchOffAttrs] = 4 }), // no such codec
		"reserved":     mutate(func(b []byte) { b[batchOffReserved+1] = 1 }),
		"zero count":   mutate(func(b []byte) { binary.BigEndian.PutUint32(b[batchOffCount:], 0) }),
		"length high":  mutate(func(b []byte) { binary.BigEndian.PutUint32(b[batchOffLength:], uint32(len(b))) }),
		"length low":   mutate(func(b []byte) { binary.BigEndian.PutUint32(b[batchOffLength:], 1) }),
	}
	for name, batch := range batches {
		_, _, err := DecodeRedeliver(append(append([]byte{}, prefix...), batch...))
		require.ErrorIs(t, err, ErrCorruptBatch, name)
	}
	// Only the header is checked here; a bad CRC is found by CheckBatch.
	body := append(append([]byte{}, prefix...), mutate(func(b []byte) { b[len(b)-2] ^= 0x40 })...)
	_, b, err := DecodeRedeliver(body)
	require.NoError(t, err)
	_, err = CheckBatch(b, 1<<20, DefaultMaxFrameBytes)
	require.ErrorIs(t, err, ErrCorruptBatch)
}

func TestGroupNamesAndCodes(t *testing.T) {
	for typ := TypeJoinGroup; typ <= TypeRedeliver; typ++ {
		require.NotContains(t, typ.String(), "Type(", "frame type 0x%x has no name", uint8(typ))
	}
	for code := CodeStaleGeneration; code <= CodeUnknownGroup; code++ {
		require.NotContains(t, code.String(), "code ", "code %d has no name", code)
		require.Equal(t, code, CodeOf(Errorf(code, "")))
	}
	require.ErrorIs(t, Errorf(CodeStaleGeneration, "generation 3 < 4"), ErrStaleGeneration)
	require.ErrorIs(t, Errorf(CodeUnknownMember, ""), ErrUnknownMember)
	require.ErrorIs(t, Errorf(CodeGroupActive, ""), ErrGroupActive)
	require.ErrorIs(t, Errorf(CodeUnknownGroup, ""), ErrUnknownGroup)
}

// FuzzGroupBodies feeds arbitrary bytes to every consumer-group decoder. No
// decoder may panic, and a body that decodes must encode back to exactly the
// same bytes. That property holds for every group decoder because the
// encoding has no freedom: fixed-width integers, counts and str16 lengths
// read as sent (a decoded string or list never exceeds its 16-bit length,
// so the encoder neither cuts nor wraps it), the ack mode and start kind
// kept as the byte read, no optional fields or varints, and no bytes left
// over (Done rejects them; Redeliver's batch header must match the rest of
// the body exactly, and its bytes are re-emitted verbatim).
func FuzzGroupBodies(f *testing.F) {
	for _, c := range groupCases(f) {
		if body := groupCodecs[c.codec].encode(c.v); len(body) <= 4096 {
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, codec := range groupCodecs {
			v, err := codec.decode(data)
			if err != nil {
				continue
			}
			if again := codec.encode(v); !bytes.Equal(again, data) {
				t.Fatalf("%s: decoded %+v re-encodes to %x, input %x", name, v, again, data)
			}
			if r, ok := v.(redeliverBody); ok {
				checkFuzzedBatch(t, r.Batch)
			}
		}
	})
}

// emptyAsNil returns v with its empty slices (at the top level and in its
// fields) set to nil: decoders return either for an empty list, and callers
// only look at the length.
func emptyAsNil(v any) any {
	out := reflect.New(reflect.TypeOf(v)).Elem()
	out.Set(reflect.ValueOf(v))
	clearEmpty(out)
	if out.Kind() == reflect.Struct {
		for i := range out.NumField() {
			clearEmpty(out.Field(i))
			if f := out.Field(i); f.Kind() == reflect.Struct {
				for j := range f.NumField() {
					clearEmpty(f.Field(j))
				}
			}
		}
	}
	return out.Interface()
}

func clearEmpty(v reflect.Value) {
	if v.Kind() == reflect.Slice && v.Len() == 0 && v.CanSet() {
		v.Set(reflect.Zero(v.Type()))
	}
}

func TestAckModeNames(t *testing.T) {
	require.Equal(t, "none", AckNone.String())
	require.Equal(t, "offset", AckOffset.String())
	require.Equal(t, "message", AckMessage.String())
	require.Equal(t, "mode 9", AckMode(9).String())
}
