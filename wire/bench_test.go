package wire

import (
	"bytes"
	"fmt"
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

// benchJSONRecords is a batch's worth of JSON log lines: about 256 KiB,
// the client's default batch size, or n records when n > 0.
func benchJSONRecords(n int) []testRecord {
	if n > 0 {
		return jsonRecords(n, 7)
	}
	return jsonRecords(1100, 7)
}

// BenchmarkCompress measures each codec on a producer's batch of JSON
// lines: building and finishing it (compressing, CRC), then the broker's
// check of it (decompressing, walking the records) and a consumer's read
// (decompressing, walking). MB/s and cpu-MB/s count the uncompressed
// batch; the ratio metric is uncompressed batch bytes per stored byte.
func BenchmarkCompress(b *testing.B) {
	for _, n := range []int{0, 4} {
		recs := benchJSONRecords(n)
		plain := buildBatch(b, nil, recs)
		for _, codec := range append([]Codec{CodecNone}, codecs...) {
			name := fmt.Sprintf("%s/records=%d", codec, len(recs))
			stored := Batch(buildCompressed(nil, recs, codec))
			ratio := float64(len(plain)) / float64(len(stored))
			b.Run("produce/"+name, func(b *testing.B) {
				buf := make([]byte, 0, len(plain)+1024)
				b.ReportAllocs()
				b.SetBytes(int64(len(plain)))
				cpu0 := cpuTime()
				for b.Loop() {
					var bb BatchBuilder
					bb.Start(buf[:0], -1, -1)
					for _, r := range recs {
						bb.Append(r.ts, r.key, r.value, r.headers)
					}
					buf = bb.FinishCompressed(codec)
				}
				reportCPU(b, cpu0, len(plain))
				b.ReportMetric(ratio, "ratio")
			})
			b.Run("check/"+name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(plain)))
				cpu0 := cpuTime()
				for b.Loop() {
					if _, err := CheckBatch(stored, DefaultMaxMessageBytes, DefaultMaxFrameBytes); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpu0, len(plain))
			})
			b.Run("consume/"+name, func(b *testing.B) {
				var d Decompressor
				b.ReportAllocs()
				b.SetBytes(int64(len(plain)))
				cpu0 := cpuTime()
				for b.Loop() {
					it, err := d.Records(stored, DefaultMaxFrameBytes)
					if err != nil {
						b.Fatal(err)
					}
					var r Record
					for it.Next(&r) {
					}
				}
				reportCPU(b, cpu0, len(plain))
			})
		}
	}
}
