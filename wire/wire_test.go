package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

type testRecord struct {
	ts      int64
	key     []byte
	value   []byte
	headers []RecordHeader
}

func buildBatch(t testing.TB, dst []byte, recs []testRecord) []byte {
	t.Helper()
	var b BatchBuilder
	b.Start(dst, 7, 42)
	for _, r := range recs {
		b.Append(r.ts, r.key, r.value, r.headers)
	}
	return b.Finish()
}

func TestBatchRoundTrip(t *testing.T) {
	recs := []testRecord{
		{ts: 1_000, key: nil, value: []byte("hello")},
		{ts: 900, key: []byte{}, value: []byte{}},
		{ts: 5_000_000_000, key: []byte("k"), value: bytes.Repeat([]byte("x"), 300),
			headers: []RecordHeader{{"a", []byte("1")}, {"", nil}}},
	}
	b := Batch(buildBatch(t, nil, recs))
	n, err := CheckBatch(b, 1<<20, DefaultMaxFrameBytes)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, int64(7), b.ProducerID())
	require.Equal(t, int32(42), b.ProducerSeq())
	require.Equal(t, int64(1_000), b.FirstTimestamp())
	require.Equal(t, int64(5_000_000_000), b.MaxTimestamp())
	require.Equal(t, len(b), BatchSize(b))

	b.SetBaseOffset(100)
	_, err = CheckBatch(b, 1<<20, DefaultMaxFrameBytes)
	require.NoError(t, err, "stamping the base offset must not break the CRC")

	it := b.Records()
	var r Record
	for i, want := range recs {
		require.True(t, it.Next(&r), "record %d", i)
		require.Equal(t, int64(100+i), r.Offset)
		require.Equal(t, want.ts, r.Timestamp)
		require.Equal(t, want.key == nil, r.Key == nil, "nil key must stay nil")
		require.Equal(t, string(want.key), string(r.Key))
		require.Equal(t, string(want.value), string(r.Value))
		var got []RecordHeader
		r.Headers(func(k, v []byte) { got = append(got, RecordHeader{string(k), append([]byte{}, v...)}) })
		require.Equal(t, len(want.headers), r.HeaderCount())
		for j := range want.headers {
			require.Equal(t, want.headers[j].Key, got[j].Key)
			require.Equal(t, string(want.headers[j].Value), string(got[j].Value))
		}
	}
	require.False(t, it.Next(&r))
	require.NoError(t, it.Err())
}

func TestBatchBuilderAfterPrefix(t *testing.T) {
	prefix := AppendBatchPrefix(AppendHeader(nil, TypePublish, 0, 9, 0), "orders", 3)
	buf := buildBatch(t, prefix, []testRecord{{ts: 1, value: []byte("v")}})
	FinishFrame(buf, 0)
	f, n, err := ReadFrame(buf, DefaultMaxFrameBytes)
	require.NoError(t, err)
	require.Equal(t, len(buf), n)
	require.Equal(t, TypePublish, f.Type)
	require.Equal(t, uint32(9), f.Corr)
	v, err := DecodeBatchView(f.Body)
	require.NoError(t, err)
	require.Equal(t, "orders", string(v.Topic))
	require.Equal(t, int32(3), v.Partition)
	require.Equal(t, len(prefix)-HeaderSize, v.BatchOffset)
	_, err = CheckBatch(v.Batch, 100, DefaultMaxFrameBytes)
	require.NoError(t, err)
}

func TestCheckBatchRejects(t *testing.T) {
	good := buildBatch(t, nil, []testRecord{{ts: 1, value: []byte("abc")}, {ts: 2, value: []byte("defg")}})
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	cases := map[string]struct {
		b    []byte
		want *Error
	}{
		"short":       {good[:BatchHeaderSize-1], ErrCorruptBatch},
		"truncated":   {good[:len(good)-1], ErrCorruptBatch},
		"bad magic":   {mutate(func(b []byte) []byte { b[batchOffMagic] = 9; return b }), ErrCorruptBatch},
		"attrs":       {mutate(func(b []byte) []byte { b[batchOffAttrs] = 0x10; return b }), ErrCorruptBatch},
		"flipped bit": {mutate(func(b []byte) []byte { b[len(b)-2] ^= 0x10; return b }), ErrCorruptBatch},
		"zero count": {mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[batchOffCount:], 0)
			return fixCRC(b)
		}), ErrCorruptBatch},
		"count too high": {mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[batchOffCount:], 3)
			return fixCRC(b)
		}), ErrCorruptBatch},
		"count too low": {mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[batchOffCount:], 1)
			return fixCRC(b)
		}), ErrCorruptBatch},
		"trailing garbage": {mutate(func(b []byte) []byte {
			b = append(b, 0)
			binary.BigEndian.PutUint32(b[batchOffLength:], uint32(len(b)-batchLengthBase))
			return fixCRC(b)
		}), ErrCorruptBatch},
		"too large": {good, ErrMessageTooLarge},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			limit := 1 << 20
			if name == "too large" {
				limit = 3
			}
			_, err := CheckBatch(c.b, limit, DefaultMaxFrameBytes)
			require.ErrorIs(t, err, c.want)
		})
	}
}

func fixCRC(b []byte) []byte {
	binary.BigEndian.PutUint32(b[batchOffCRC:], Batch(b).ComputeCRC())
	return b
}

func TestReadFrameIncremental(t *testing.T) {
	var stream []byte
	for i := range 5 {
		body := AppendError(nil, CodeUnknownTopic, fmt.Sprintf("topic-%d", i))
		stream = AppendHeader(stream, TypeError, 0, uint32(i), len(body))
		stream = append(stream, body...)
	}
	// Every prefix of the stream yields exactly the frames it holds whole.
	for cut := 0; cut <= len(stream); cut++ {
		buf := stream[:cut]
		var got int
		for {
			f, n, err := ReadFrame(buf, DefaultMaxFrameBytes)
			require.NoError(t, err)
			if n == 0 {
				break
			}
			e, err := DecodeError(f.Body)
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("topic-%d", got), e.Message)
			require.Equal(t, uint32(got), f.Corr)
			got++
			buf = buf[n:]
		}
		require.LessOrEqual(t, got, 5)
		if cut == len(stream) {
			require.Equal(t, 5, got)
		}
	}
}

func TestReadFrameBadHeaders(t *testing.T) {
	hdr := func(length uint32, reserved byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return append(b, byte(TypePing), 0, reserved, 0, 0, 0, 0, 1)
	}
	_, _, err := ReadFrame(hdr(4, 0), 1024)
	require.ErrorIs(t, err, ErrMalformed)
	_, _, err = ReadFrame(hdr(0xFFFFFFFF, 0), 1024)
	require.ErrorIs(t, err, ErrFrameTooLarge, "a 4 GiB claim is refused from the header alone")
	_, _, err = ReadFrame(hdr(12, 1), 1024)
	require.ErrorIs(t, err, ErrMalformed)
	f, n, err := ReadFrame(hdr(12, 0), 1024)
	require.NoError(t, err)
	require.Equal(t, 12, n)
	require.Empty(t, f.Body)
}

func TestMessagesRoundTrip(t *testing.T) {
	h := Hello{MinVersion: 1, MaxVersion: 3, ClientName: "c", AuthMechanism: "token", AuthData: []byte("s3cret")}
	gotH, err := DecodeHello(h.Append(nil))
	require.NoError(t, err)
	require.Equal(t, h, gotH)

	ok := HelloOK{Version: 1, MaxFrameBytes: 1 << 22, MaxMessageBytes: 1 << 20, ServerName: "ratatoskr"}
	gotOK, err := DecodeHelloOK(ok.Append(nil))
	require.NoError(t, err)
	require.Equal(t, ok, gotOK)
	ok.Version, ok.RunID = 3, 1<<63|42 // version 3 carries the run id
	gotOK, err = DecodeHelloOK(ok.Append(nil))
	require.NoError(t, err)
	require.Equal(t, ok, gotOK)
	ok.Version = 2 // and version 2 does not
	require.Len(t, ok.Append(nil), len((&HelloOK{Version: 3, ServerName: "ratatoskr"}).Append(nil))-8)

	e, err := DecodeError(AppendError(nil, CodeSlowConsumer, "behind by 9 MiB"))
	require.NoError(t, err)
	require.ErrorIs(t, e, ErrSlowConsumer)
	require.Equal(t, "ratatoskr: slow consumer: behind by 9 MiB", e.Error())

	ct := CreateTopic{Name: "t", Partitions: 4, Config: []KV{{"max-subscribers", "10"}}}
	gotCT, err := DecodeCreateTopic(ct.Append(nil))
	require.NoError(t, err)
	require.Equal(t, ct, gotCT)

	name, err := DecodeName(AppendName(nil, "abc"))
	require.NoError(t, err)
	require.Equal(t, "abc", string(name))

	list := []TopicSummary{{"a", 1}, {"b", 8}}
	gotList, err := DecodeTopicList(AppendTopicList(nil, list))
	require.NoError(t, err)
	require.Equal(t, list, gotList)

	ti := TopicInfo{Name: "a", Config: []KV{{"k", "v"}},
		Partitions: []PartitionInfo{{0, 1, 2, 3, 4, 5, 6, PartitionOnline, ""}, {1, 0, 9, 0, 0, 1, 0, PartitionOnline, ""}}}
	gotTI, err := DecodeTopicInfo(ti.Append(nil, 1), 1)
	require.NoError(t, err)
	require.Equal(t, ti, gotTI)
	ti.Partitions[1].State, ti.Partitions[1].Reason = PartitionOffline, "open: permission denied"
	gotTI, err = DecodeTopicInfo(ti.Append(nil, 2), 2)
	require.NoError(t, err)
	require.Equal(t, ti, gotTI)

	ack := PublishAck{Partition: 2, BaseOffset: 1 << 40, Count: 17}
	frame := AppendPublishAck(nil, 77, ack)
	require.Len(t, frame, PublishAckSize)
	f, _, err := ReadFrame(frame, DefaultMaxFrameBytes)
	require.NoError(t, err)
	gotAck, err := DecodePublishAck(f.Body)
	require.NoError(t, err)
	require.Equal(t, ack, gotAck)

	s := Subscribe{Topic: "x", Partition: PartitionAny, Start: Start{Kind: StartTime, Value: 1234}}
	topic, p, start, err := DecodeSubscribe(s.Append(nil))
	require.NoError(t, err)
	require.Equal(t, "x", string(topic))
	require.Equal(t, PartitionAny, p)
	require.Equal(t, s.Start, start)
	_, _, _, err = DecodeSubscribe((&Subscribe{Topic: "x", Start: Start{Kind: 9}}).Append(nil))
	require.ErrorIs(t, err, ErrMalformed)
	// Resume offsets ride at the end; without them the body is version 1's.
	s.Resume = []PartitionStart{{0, 17}, {2, 1 << 40}}
	topic, p, start, resume, err := DecodeSubscribeResume(s.Append(nil))
	require.NoError(t, err)
	require.Equal(t, "x", string(topic))
	require.Equal(t, PartitionAny, p)
	require.Equal(t, s.Start, start)
	require.Equal(t, s.Resume, resume)
	_, _, _, err = DecodeSubscribe(s.Append(nil))
	require.ErrorIs(t, err, ErrMalformed, "an Unsubscribe carries no resume offsets")
	_, _, _, resume, err = DecodeSubscribeResume((&Subscribe{Topic: "x"}).Append(nil))
	require.NoError(t, err)
	require.Empty(t, resume)

	fr := Fetch{Topic: "f", Partition: 3, Start: Start{Kind: StartOffset, Value: 99}, MaxBytes: 4096, MaxWaitMs: 50}
	gotFetch, err := DecodeFetch(fr.Append(nil))
	require.NoError(t, err)
	require.Equal(t, fr, gotFetch)

	b1 := buildBatch(t, nil, []testRecord{{ts: 1, value: []byte("a")}})
	b2 := buildBatch(t, nil, []testRecord{{ts: 2, value: []byte("b")}, {ts: 3, value: []byte("c")}})
	hdr := FetchResultHeader{Partition: 3, StartOffset: 5, EndOffset: 8, Offset: 6}
	body := append(append(AppendFetchResultHeader(nil, hdr), b1...), b2...)
	gotHdr, batches, err := DecodeFetchResult(body)
	require.NoError(t, err)
	require.Equal(t, hdr, gotHdr)
	require.Len(t, batches, 2)
	require.Equal(t, 2, batches[1].Count())
	_, _, err = DecodeFetchResult(body[:len(body)-1])
	require.Error(t, err)

	sok := SubscribeOK{Partitions: 5, Starts: []PartitionStart{{0, 10}, {3, 0}}}
	gotSok, err := DecodeSubscribeOK(sok.Append(nil, 2), 2)
	require.NoError(t, err)
	require.Equal(t, sok, gotSok)
	sok.Durable = true
	gotSok, err = DecodeSubscribeOK(sok.Append(nil, 3), 3)
	require.NoError(t, err)
	require.Equal(t, sok, gotSok)
}

func TestDecodersRejectShortAndTrailing(t *testing.T) {
	bodies := map[string][]byte{
		"hello":      (&Hello{ClientName: "x"}).Append(nil),
		"hello ok":   (&HelloOK{ServerName: "x"}).Append(nil),
		"create":     (&CreateTopic{Name: "t", Config: []KV{{"a", "b"}}}).Append(nil),
		"list":       AppendTopicList(nil, []TopicSummary{{"a", 1}}),
		"info":       (&TopicInfo{Name: "a", Partitions: []PartitionInfo{{}}}).Append(nil, 1),
		"info v2":    (&TopicInfo{Name: "a", Partitions: []PartitionInfo{{Reason: "r"}}}).Append(nil, 2),
		"subscribe":  (&Subscribe{Topic: "t"}).Append(nil),
		"resume":     (&Subscribe{Topic: "t", Resume: []PartitionStart{{1, 2}}}).Append(nil),
		"hello ok 3": (&HelloOK{Version: 3, ServerName: "x", RunID: 7}).Append(nil),
		"sub ok 3":   (&SubscribeOK{Starts: []PartitionStart{{1, 2}}, Durable: true}).Append(nil, 3),
		"fetch":      (&Fetch{Topic: "t", MaxBytes: 1}).Append(nil),
		"publishack": AppendPublishAck(nil, 0, PublishAck{})[HeaderSize:],
	}
	decode := map[string]func([]byte) error{
		"hello":      func(b []byte) error { _, err := DecodeHello(b); return err },
		"hello ok":   func(b []byte) error { _, err := DecodeHelloOK(b); return err },
		"create":     func(b []byte) error { _, err := DecodeCreateTopic(b); return err },
		"list":       func(b []byte) error { _, err := DecodeTopicList(b); return err },
		"info":       func(b []byte) error { _, err := DecodeTopicInfo(b, 1); return err },
		"info v2":    func(b []byte) error { _, err := DecodeTopicInfo(b, 2); return err },
		"subscribe":  func(b []byte) error { _, _, _, err := DecodeSubscribe(b); return err },
		"hello ok 3": func(b []byte) error { _, err := DecodeHelloOK(b); return err },
		"sub ok 3":   func(b []byte) error { _, err := DecodeSubscribeOK(b, 3); return err },
		"resume": func(b []byte) error {
			// Cut right before its resume offsets, the body is a valid
			// plain Subscribe; here that counts as losing them.
			_, _, _, r, err := DecodeSubscribeResume(b)
			if err == nil && len(r) == 0 {
				return errShort
			}
			return err
		},
		"fetch":      func(b []byte) error { _, err := DecodeFetch(b); return err },
		"publishack": func(b []byte) error { _, err := DecodePublishAck(b); return err },
	}
	for name, body := range bodies {
		require.NoError(t, decode[name](body), name)
		for cut := range len(body) {
			require.ErrorIs(t, decode[name](body[:cut]), ErrMalformed, "%s cut at %d", name, cut)
		}
		require.ErrorIs(t, decode[name](append(body, 0)), ErrMalformed, "%s with a trailing byte", name)
	}
}

func TestErrorIsMatchesByCode(t *testing.T) {
	err := fmt.Errorf("publish: %w", Errorf(CodeUnknownTopic, "no topic named x"))
	require.ErrorIs(t, err, ErrUnknownTopic)
	require.False(t, errors.Is(err, ErrTopicExists))
	require.Equal(t, CodeUnknownTopic, CodeOf(err))
	require.Equal(t, CodeInternal, CodeOf(errors.New("boom")))
	require.Equal(t, "code 999", Code(999).String())
	require.Equal(t, "Type(0x7f)", Type(0x7f).String())
}

func TestValidateTopicName(t *testing.T) {
	for _, ok := range []string{"a", "orders.v2", "A_b-C", string(bytes.Repeat([]byte("x"), 249))} {
		require.NoError(t, ValidateTopicName(ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "ü", string(bytes.Repeat([]byte("x"), 250))} {
		require.ErrorIs(t, ValidateTopicName(bad), ErrInvalidArgument, bad)
	}
}

// TestTopicInfoVersions: a version 1 TopicInfo is byte for byte what it
// was before version 2 existed (an older client decodes it strictly), and
// version 2 adds a state byte and a reason after each partition.
func TestTopicInfoVersions(t *testing.T) {
	ti := TopicInfo{Name: "t", Config: []KV{{"storage", "disk"}},
		Partitions: []PartitionInfo{{ID: 1, StartOffset: 2, EndOffset: 3, Subscribers: 4, Bytes: 5, Segments: 6,
			Corrupt: 7, State: PartitionReadOnly, Reason: "fsync"}}}
	v1 := "0001" + "74" + // name "t"
		"0001" + "0007" + "73746f72616765" + "0004" + "6469736b" + // one kv: storage = disk
		"00000001" + // one partition
		"00000001" + "0000000000000002" + "0000000000000003" + "00000004" + "0000000000000005" + "00000006" + "00000007"
	require.Equal(t, v1, hex.EncodeToString(ti.Append(nil, 1)))
	v2 := v1 + "01" + "0005" + "6673796e63" // state read-only, reason "fsync"
	require.Equal(t, v2, hex.EncodeToString(ti.Append(nil, 2)))

	_, err := DecodeTopicInfo(ti.Append(nil, 2), 1)
	require.ErrorIs(t, err, ErrMalformed, "a version 1 decoder refuses the version 2 layout")
	got, err := DecodeTopicInfo(ti.Append(nil, 1), 1)
	require.NoError(t, err)
	require.Equal(t, PartitionOnline, got.Partitions[0].State, "version 1 carries no state")
	require.Equal(t, "read-only", PartitionReadOnly.String())
	require.Equal(t, "state 9", PartitionState(9).String())
}

// FuzzAuthBodies: whatever a client sends as its Hello or AuthContinue
// body, decoding never panics, and what decodes re-encodes to the same
// bytes (the broker reads exactly what the client wrote).
func FuzzAuthBodies(f *testing.F) {
	f.Add((&Hello{MinVersion: 1, MaxVersion: 3, ClientName: "c", AuthMechanism: "SCRAM-SHA-256",
		AuthData: []byte("n,,n=alice,r=abc")}).Append(nil))
	f.Add(AppendAuth(nil, []byte("c=biws,r=abcdef,p=AAAA")))
	f.Add([]byte{0, 0, 0, 5, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := DecodeHello(data); err == nil {
			if again := h.Append(nil); !bytes.Equal(again, data) {
				t.Fatalf("Hello %+v re-encodes to %x, input %x", h, again, data)
			}
		}
		if a, err := DecodeAuth(data); err == nil {
			if again := AppendAuth(nil, a); !bytes.Equal(again, data) {
				t.Fatalf("auth data %x re-encodes to %x", a, again)
			}
		}
	})
}
