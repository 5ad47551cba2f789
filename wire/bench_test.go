package wire

import (
	"bytes"
	"testing"
)

// benchPublishFrame is a Publish frame of n 128-byte records.
func benchPublishFrame(b testing.TB, n int) []byte {
	value := bytes.Repeat([]byte("v"), 128)
	buf, start := StartFrame(nil, TypePublish, 0, 1)
	buf = AppendBatchPrefix(buf, "bench", 0)
	var bb BatchBuilder
	bb.Start(buf, -1, -1)
	for i := range n {
		bb.Append(int64(i), nil, value, nil)
	}
	buf = bb.Finish()
	FinishFrame(buf, start)
	return buf
}

// BenchmarkReadFrame measures finding and decoding a Publish frame: the
// broker's per-frame decode. It must report 0 allocs/op.
func BenchmarkReadFrame(b *testing.B) {
	frame := benchPublishFrame(b, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, n, err := ReadFrame(frame, DefaultMaxFrameBytes)
		if err != nil || n != len(frame) {
			b.Fatal(err)
		}
		if _, err := DecodeBatchView(f.Body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckBatch measures the broker's full validation (CRC and record
// walk) of a 64-record batch; ns/op divided by 64 is the cost per message.
func BenchmarkCheckBatch(b *testing.B) {
	frame := benchPublishFrame(b, 64)
	f, _, _ := ReadFrame(frame, DefaultMaxFrameBytes)
	v, _ := DecodeBatchView(f.Body)
	b.ReportAllocs()
	b.SetBytes(int64(len(v.Batch)))
	for b.Loop() {
		if _, err := CheckBatch(v.Batch, DefaultMaxMessageBytes, DefaultMaxFrameBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildBatch measures a producer encoding a 64-record batch.
func BenchmarkBuildBatch(b *testing.B) {
	value := bytes.Repeat([]byte("v"), 128)
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		var bb BatchBuilder
		bb.Start(buf[:0], -1, -1)
		for i := range 64 {
			bb.Append(int64(i), nil, value, nil)
		}
		buf = bb.Finish()
	}
}

// BenchmarkIterateRecords measures a subscriber decoding a 64-record batch.
func BenchmarkIterateRecords(b *testing.B) {
	frame := benchPublishFrame(b, 64)
	f, _, _ := ReadFrame(frame, DefaultMaxFrameBytes)
	v, _ := DecodeBatchView(f.Body)
	b.ReportAllocs()
	for b.Loop() {
		it := v.Batch.Records()
		var r Record
		for it.Next(&r) {
		}
		if it.Err() != nil {
			b.Fatal(it.Err())
		}
	}
}
