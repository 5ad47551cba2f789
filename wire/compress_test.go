package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var codecs = []Codec{CodecLZ4, CodecZstd, CodecSnappy}

// jsonLine is a log line as a service writes it: repeated keys, varied
// values; seed picks the values.
func jsonLine(r *rand.Rand) []byte {
	levels := []string{"debug", "info", "info", "info", "warn", "error"}
	services := []string{"checkout", "payments", "catalog", "search", "auth"}
	paths := []string{"/api/v1/orders", "/api/v1/cart", "/api/v1/items", "/healthz", "/api/v2/search"}
	msgs := []string{"request served", "order created", "cache miss", "retrying upstream call", "user signed in"}
	return fmt.Appendf(nil, `{"ts":"2026-11-25T10:%02d:%02d.%06dZ","level":%q,"service":%q,"host":"web-%02d",`+
		`"user_id":%d,"order_id":"o-%06x","path":"%s/%d","status":%d,"latency_ms":%.1f,"msg":%q}`,
		r.IntN(60), r.IntN(60), r.IntN(1e6), levels[r.IntN(len(levels))], services[r.IntN(len(services))],
		r.IntN(32), r.IntN(100000), r.IntN(1<<24), paths[r.IntN(len(paths))], r.IntN(10000),
		[]int{200, 200, 200, 201, 404, 500}[r.IntN(6)], r.Float64()*250, msgs[r.IntN(len(msgs))])
}

// fataler is what the helpers need of a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func jsonRecords(n int, seed uint64) []testRecord {
	r := rand.New(rand.NewPCG(seed, 1))
	recs := make([]testRecord, n)
	for i := range recs {
		recs[i] = testRecord{ts: 1_000_000 + int64(i)*997, value: jsonLine(r)}
		if i%3 == 0 {
			recs[i].key = fmt.Appendf(nil, "user-%d", r.IntN(100))
		}
		if i%5 == 0 {
			recs[i].headers = []RecordHeader{{"trace", fmt.Appendf(nil, "%016x", r.Uint64())}, {"", nil}}
		}
	}
	return recs
}

// buildCompressed builds recs into a batch with codec, after prefix.
func buildCompressed(dst []byte, recs []testRecord, codec Codec) []byte {
	var b BatchBuilder
	b.Start(dst, 7, 42)
	for _, r := range recs {
		b.Append(r.ts, r.key, r.value, r.headers)
	}
	return b.FinishCompressed(codec)
}

// readAll decompresses b and returns its records, owned.
func readAll(t fataler, b Batch) []testRecord {
	t.Helper()
	var d Decompressor
	it, err := d.Records(b, DefaultMaxFrameBytes)
	if err != nil {
		t.Fatalf("decompress: %v", err)
	}
	var out []testRecord
	var r Record
	for it.Next(&r) {
		tr := testRecord{ts: r.Timestamp, key: bytes.Clone(r.Key), value: bytes.Clone(r.Value)}
		r.Headers(func(k, v []byte) { tr.headers = append(tr.headers, RecordHeader{string(k), bytes.Clone(v)}) })
		out = append(out, tr)
	}
	if it.Err() != nil {
		t.Fatalf("iterate: %v", it.Err())
	}
	return out
}

func sameRecords(t fataler, got, want []testRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ts != w.ts || !bytes.Equal(g.key, w.key) || (g.key == nil) != (w.key == nil) || !bytes.Equal(g.value, w.value) ||
			len(g.headers) != len(w.headers) {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
		for j := range w.headers {
			if g.headers[j].Key != w.headers[j].Key || !bytes.Equal(g.headers[j].Value, w.headers[j].Value) {
				t.Fatalf("record %d header %d: got %+v, want %+v", i, j, g.headers[j], w.headers[j])
			}
		}
	}
}

func TestCompressRoundTrip(t *testing.T) {
	recs := jsonRecords(200, 1)
	plain := buildBatch(t, nil, recs)
	for _, codec := range codecs {
		t.Run(codec.String(), func(t *testing.T) {
			b := Batch(buildCompressed(nil, recs, codec))
			if b.Codec() != codec {
				t.Fatalf("codec %s, want %s", b.Codec(), codec)
			}
			if len(b) >= len(plain)/2 {
				t.Fatalf("%s batch of JSON lines is %d bytes, plain %d: expected at least 2x", codec, len(b), len(plain))
			}
			if b.CRC() != b.ComputeCRC() {
				t.Fatal("CRC does not cover the stored bytes")
			}
			n, err := CheckBatch(b, DefaultMaxMessageBytes, DefaultMaxFrameBytes)
			if err != nil || n != len(recs) {
				t.Fatalf("CheckBatch = %d, %v", n, err)
			}
			if n, err := CheckStoredBatch(b); err != nil || n != len(recs) {
				t.Fatalf("CheckStoredBatch = %d, %v", n, err)
			}
			// The header fields stay readable without decompressing.
			pb := Batch(plain)
			if b.Count() != pb.Count() || b.FirstTimestamp() != pb.FirstTimestamp() ||
				b.MaxTimestamp() != pb.MaxTimestamp() || b.ProducerID() != 7 || b.ProducerSeq() != 42 {
				t.Fatal("header fields differ from the plain batch's")
			}
			b.SetBaseOffset(1000)
			got := readAll(t, b)
			sameRecords(t, got, recs)
			it := b.Records()
			var r Record
			if it.Next(&r) || !errors.Is(it.Err(), ErrCorruptBatch) {
				t.Fatalf("Records on a compressed batch: %v, want an error", it.Err())
			}
		})
	}
}

// TestCompressOffsets checks that offsets come from the stamped base.
func TestCompressOffsets(t *testing.T) {
	b := Batch(buildCompressed(nil, jsonRecords(10, 2), CodecZstd))
	b.SetBaseOffset(500)
	var d Decompressor
	it, err := d.Records(b, DefaultMaxFrameBytes)
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	for want := int64(500); it.Next(&r); want++ {
		if r.Offset != want {
			t.Fatalf("offset %d, want %d", r.Offset, want)
		}
	}
}

func TestCompressSkipsWhereItLoses(t *testing.T) {
	small := []testRecord{{ts: 1, value: []byte(`{"a":1,"b":"hello hello hello hello"}`)}}
	r := rand.New(rand.NewPCG(3, 3))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	for _, codec := range codecs {
		if b := Batch(buildCompressed(nil, small, codec)); b.Codec() != CodecNone {
			t.Errorf("%s: a %d-byte batch was compressed", codec, len(b))
		}
		b := Batch(buildCompressed(nil, []testRecord{{ts: 1, value: random}}, codec))
		if b.Codec() != CodecNone {
			t.Errorf("%s: random bytes were compressed", codec)
		}
		if _, err := CheckBatch(b, DefaultMaxMessageBytes, DefaultMaxFrameBytes); err != nil {
			t.Errorf("%s: %v", codec, err)
		}
	}
	if b := Batch(buildCompressed(nil, jsonRecords(50, 1), CodecNone)); b.Codec() != CodecNone {
		t.Error("CodecNone compressed")
	}
}

// TestCompressAfterPrefix builds a batch after other bytes, as the client
// builds it after the frame header.
func TestCompressAfterPrefix(t *testing.T) {
	prefix := []byte("frame header and topic")
	recs := jsonRecords(30, 4)
	for _, codec := range codecs {
		buf := buildCompressed(append([]byte(nil), prefix...), recs, codec)
		if !bytes.HasPrefix(buf, prefix) {
			t.Fatal("prefix changed")
		}
		b := Batch(buf[len(prefix):])
		if BatchSize(b) != len(b) || b.Codec() != codec {
			t.Fatalf("%s: size %d of %d, codec %s", codec, BatchSize(b), len(b), b.Codec())
		}
		sameRecords(t, readAll(t, b), recs)
	}
}

// corrupt returns a copy of a compressed batch changed by fn, with its
// length field and CRC made right again, so that only the checks past the
// CRC can catch it.
func corrupt(b []byte, fn func(b []byte) []byte) []byte {
	b = fn(bytes.Clone(b))
	binary.BigEndian.PutUint32(b[batchOffLength:], uint32(len(b)-batchLengthBase))
	return fixCRC(b)
}

func TestCorruptCompressedBatch(t *testing.T) {
	recs := jsonRecords(40, 5)
	for _, codec := range codecs {
		good := buildCompressed(nil, recs, codec)
		recLen := int(binary.BigEndian.Uint32(good[BatchHeaderSize:]))
		cases := []struct {
			name string
			b    []byte
			code Code
			msg  string
		}{
			{"bad bytes", corrupt(good, func(b []byte) []byte {
				for i := BatchHeaderSize + 4; i < len(b); i += 7 {
					b[i] ^= 0x5a
				}
				return b
			}), CodeCorruptBatch, ""},
			{"truncated", corrupt(good, func(b []byte) []byte { return b[:len(b)-10] }), CodeCorruptBatch, ""},
			{"no length field", corrupt(good, func(b []byte) []byte { return b[:BatchHeaderSize+2] }), CodeCorruptBatch, "shorter than"},
			{"length too small", corrupt(good, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[BatchHeaderSize:], uint32(recLen-1))
				return b
			}), CodeCorruptBatch, "do not decompress"},
			{"length too large", corrupt(good, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[BatchHeaderSize:], uint32(recLen+1))
				return b
			}), CodeCorruptBatch, "do not decompress"},
			{"bomb", corrupt(good, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[BatchHeaderSize:], 1<<31)
				return b
			}), CodeCorruptBatch, "at most 4194304 bytes"},
			{"count too high", corrupt(good, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[batchOffCount:], uint32(len(recs)+1))
				return b
			}), CodeCorruptBatch, "record count"},
			{"count too low", corrupt(good, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[batchOffCount:], uint32(len(recs)-1))
				return b
			}), CodeCorruptBatch, "record count"},
			{"other codec", corrupt(good, func(b []byte) []byte {
				b[batchOffAttrs] = byte(codecs[(int(codec))%len(codecs)])
				return b
			}), CodeCorruptBatch, ""},
			{"no codec bit", corrupt(good, func(b []byte) []byte {
				b[batchOffAttrs] = 0
				return b
			}), CodeCorruptBatch, ""},
			{"unknown codec", corrupt(good, func(b []byte) []byte {
				b[batchOffAttrs] = 4
				return b
			}), CodeCorruptBatch, "unknown compression codec"},
			{"high attribute bit", corrupt(good, func(b []byte) []byte {
				b[batchOffAttrs] |= 0x80
				return b
			}), CodeCorruptBatch, "unknown compression codec"},
		}
		for _, c := range cases {
			t.Run(codec.String()+"/"+c.name, func(t *testing.T) {
				_, err := CheckBatch(c.b, DefaultMaxMessageBytes, DefaultMaxFrameBytes)
				if CodeOf(err) != c.code || !strings.Contains(fmt.Sprint(err), c.msg) {
					t.Fatalf("CheckBatch: %v, want %s containing %q", err, c.code, c.msg)
				}
				if checkBatchHeader(c.b) != nil {
					return // readers check the header first (DecodeBatchView)
				}
				var d Decompressor
				if it, err := d.Records(Batch(c.b), DefaultMaxFrameBytes); err == nil {
					var r Record
					for it.Next(&r) {
					}
					if it.Err() == nil && Batch(c.b).Codec() != CodecNone {
						t.Fatal("the Decompressor read the corrupt batch without an error")
					}
				}
			})
		}
	}
}

// TestCompressedMessageTooLarge checks that the size limit applies to the
// records inside a compressed batch.
func TestCompressedMessageTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte(`{"k":"v"},`), 200)
	for _, codec := range codecs {
		b := buildCompressed(nil, []testRecord{{ts: 1, value: big}}, codec)
		if Batch(b).Codec() != codec {
			t.Fatal("not compressed")
		}
		if _, err := CheckBatch(b, len(big)-1, DefaultMaxFrameBytes); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("%s: %v, want message too large", codec, err)
		}
		// The decompressed batch is 52+ bytes over the value: a maxBatch
		// below that is a bomb, however small the frame.
		if _, err := CheckBatch(b, DefaultMaxMessageBytes, len(big)); !errors.Is(err, ErrCorruptBatch) {
			t.Fatalf("%s: %v, want corrupt batch over maxBatch", codec, err)
		}
	}
}

func TestParseCodec(t *testing.T) {
	for _, c := range append([]Codec{CodecNone}, codecs...) {
		got, err := ParseCodec(strings.ToUpper(c.String()))
		if err != nil || got != c {
			t.Fatalf("ParseCodec(%s) = %v, %v", c, got, err)
		}
		if !ValidAttributes(byte(c)) {
			t.Fatalf("%s not valid attributes", c)
		}
	}
	if _, err := ParseCodec("gzip"); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "lz4") {
		t.Fatalf("ParseCodec(gzip): %v", err)
	}
	for _, a := range []byte{4, 5, 7, 8, 0x13, 0xff} {
		if ValidAttributes(a) {
			t.Fatalf("attributes %#x valid", a)
		}
	}
}

// TestCompressProperty: any records, any codec, round trip through
// compression and CheckBatch unchanged.
func TestCompressProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		codec := rapid.SampledFrom(append([]Codec{CodecNone}, codecs...)).Draw(t, "codec")
		n := rapid.IntRange(1, 40).Draw(t, "n")
		alphabet := rapid.SampledFrom([]string{"ab", "abcdefgh{}\":,", "\x00\x01\xfe\xff0123456789"}).Draw(t, "alphabet")
		recs := make([]testRecord, n)
		for i := range recs {
			gen := rapid.SliceOfN(rapid.SampledFrom([]byte(alphabet)), 0, 600)
			recs[i] = testRecord{ts: rapid.Int64Range(-1e12, 1e12).Draw(t, "ts"), value: gen.Draw(t, "value")}
			if rapid.Bool().Draw(t, "haskey") {
				recs[i].key = gen.Draw(t, "key")
				if recs[i].key == nil {
					recs[i].key = []byte{}
				}
			}
			if rapid.Bool().Draw(t, "hasheader") {
				recs[i].headers = []RecordHeader{{Key: "h", Value: gen.Draw(t, "header")}}
			}
		}
		b := buildCompressed(nil, recs, codec)
		if c := Batch(b).Codec(); c != codec && c != CodecNone {
			t.Fatalf("codec %s from %s", c, codec)
		}
		if got, err := CheckBatch(b, DefaultMaxMessageBytes, DefaultMaxFrameBytes); err != nil || got != n {
			t.Fatalf("CheckBatch = %d, %v", got, err)
		}
		for i := range recs {
			if recs[i].value == nil {
				recs[i].value = []byte{}
			}
			for j := range recs[i].headers {
				if recs[i].headers[j].Value == nil {
					recs[i].headers[j].Value = []byte{}
				}
			}
		}
		sameRecords(t, readAll(t, Batch(b)), recs)
	})
}

// TestDecompressorReusesBuffer: once grown, reading batches allocates
// nothing, which is what a subscription relies on.
func TestDecompressorReusesBuffer(t *testing.T) {
	batches := make([]Batch, 0, len(codecs))
	for i, c := range codecs {
		batches = append(batches, Batch(buildCompressed(nil, jsonRecords(100, uint64(i)), c)))
	}
	var d Decompressor
	read := func() {
		for _, b := range batches {
			it, err := d.Records(b, DefaultMaxFrameBytes)
			if err != nil {
				t.Fatal(err)
			}
			var r Record
			for it.Next(&r) {
			}
		}
	}
	read()
	if a := testing.AllocsPerRun(50, read); a > 0.5 {
		t.Fatalf("%.1f allocations per pass over %d compressed batches", a, len(batches))
	}
}
