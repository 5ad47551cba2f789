package wire

import (
	"testing"

	"pgregory.net/rapid"
)

// TestValidRecordsAgreesWithDecoding: the fast walk (validRecords)
// accepts a batch's records exactly when decoding them one by one
// (checkRecordsSlow) does, for well-formed batches and for batches with a
// byte changed, bytes cut off or bytes added, with maxMessage at, below
// and above their largest record.
func TestValidRecordsAgreesWithDecoding(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		bytesOf := func(label string, max int) []byte {
			return rapid.SliceOfN(rapid.Byte(), 0, max).Draw(rt, label)
		}
		recs := make([]testRecord, rapid.IntRange(1, 8).Draw(rt, "records"))
		largest := 0
		for i := range recs {
			r := &recs[i]
			r.ts = rapid.Int64().Draw(rt, "ts")
			if rapid.Bool().Draw(rt, "keyed") {
				r.key = bytesOf("key", 20)
			}
			r.value = bytesOf("value", 300) // past one byte of length
			for range rapid.IntRange(0, 3).Draw(rt, "headers") {
				r.headers = append(r.headers, RecordHeader{Key: string(bytesOf("hkey", 5)), Value: bytesOf("hvalue", 5)})
			}
			largest = max(largest, MessageSize(r.key, r.value, r.headers))
		}
		var bb BatchBuilder
		bb.Start(nil, -1, -1)
		for _, r := range recs {
			bb.Append(r.ts, r.key, r.value, r.headers)
		}
		b := Batch(bb.Finish())
		records := append([]byte(nil), b[BatchHeaderSize:]...)
		switch rapid.IntRange(0, 3).Draw(rt, "damage") {
		case 1:
			if len(records) > 0 {
				i := rapid.IntRange(0, len(records)-1).Draw(rt, "at")
				records[i] = rapid.Byte().Draw(rt, "byte")
			}
		case 2:
			records = records[:rapid.IntRange(0, len(records)).Draw(rt, "cut")]
		case 3:
			records = append(records, bytesOf("extra", 4)...)
		}
		count := len(recs) + rapid.IntRange(-1, 1).Draw(rt, "count error")
		maxMessage := largest + rapid.IntRange(-2, 2).Draw(rt, "limit")
		it := RecordIter{rest: records, n: count}
		_, err := checkRecordsSlow(&it, count, maxMessage)
		if fast := validRecords(records, count, maxMessage); fast != (err == nil) {
			rt.Fatalf("validRecords says %t, decoding says %v", fast, err)
		}
	})
}
