package wire

import (
	"encoding/binary"
	"testing"
)

// seedStream is a valid stream of frames of every kind used as fuzz seeds.
func seedStream(t testing.TB) []byte {
	var s []byte
	add := func(typ Type, body []byte) {
		s = AppendHeader(s, typ, 0, 1, len(body))
		s = append(s, body...)
	}
	add(TypeHello, (&Hello{MinVersion: 1, MaxVersion: 1, ClientName: "fuzz"}).Append(nil))
	add(TypeCreateTopic, (&CreateTopic{Name: "t", Partitions: 2, Config: []KV{{"a", "b"}}}).Append(nil))
	add(TypeSubscribe, (&Subscribe{Topic: "t", Partition: -1, Start: Start{Kind: StartOffset, Value: 7}}).Append(nil))
	add(TypeFetch, (&Fetch{Topic: "t", Start: Start{Kind: StartEarliest}, MaxBytes: 1 << 20, MaxWaitMs: 100}).Append(nil))
	pub := AppendBatchPrefix(nil, "t", 0)
	pub = buildBatch(t, pub, []testRecord{{ts: 1, key: []byte("k"), value: []byte("v"),
		headers: []RecordHeader{{"h", []byte("x")}}}, {ts: 2, value: []byte("w")}})
	add(TypePublish, pub)
	add(TypePing, nil)
	return s
}

// decodeAll parses every frame of buf and decodes each body the way a server
// or client would. It must never panic, whatever buf holds.
func decodeAll(buf []byte) (frames int) {
	for {
		f, n, err := ReadFrame(buf, 1<<16)
		if err != nil || n == 0 {
			return frames
		}
		decodeBody(f)
		frames++
		buf = buf[n:]
	}
}

func decodeBody(f Frame) {
	switch f.Type {
	case TypeHello:
		_, _ = DecodeHello(f.Body)
	case TypeHelloOK:
		_, _ = DecodeHelloOK(f.Body)
	case TypeError:
		_, _ = DecodeError(f.Body)
	case TypeCreateTopic:
		_, _ = DecodeCreateTopic(f.Body)
	case TypeDeleteTopic, TypeDescribeTopic:
		_, _ = DecodeName(f.Body)
	case TypeTopicList:
		_, _ = DecodeTopicList(f.Body)
	case TypeTopicInfo:
		_, _ = DecodeTopicInfo(f.Body, 1)
		_, _ = DecodeTopicInfo(f.Body, 2)
	case TypePublish, TypeDeliver:
		if v, err := DecodeBatchView(f.Body); err == nil {
			if _, err := CheckBatch(v.Batch, 1<<16, 1<<20); err == nil {
				it := v.Batch.Records()
				var r Record
				for it.Next(&r) {
					r.Headers(func(_, _ []byte) {})
				}
			}
		}
	case TypePublishAck:
		_, _ = DecodePublishAck(f.Body)
	case TypeSubscribe, TypeUnsubscribe:
		_, _, _, _ = DecodeSubscribe(f.Body)
	case TypeSubscribeOK:
		_, _ = DecodeSubscribeOK(f.Body, 3)
		_, _, _, _, _ = DecodeSubscribeResume(f.Body)
	case TypeFetch:
		_, _ = DecodeFetch(f.Body)
	case TypeFetchResult:
		_, _, _ = DecodeFetchResult(f.Body)
	}
}

// FuzzReadFrame feeds random bytes, and the same bytes split in two as a
// network would deliver them, to the frame reader and every body decoder. The
// frames found must not depend on where the input was split.
func FuzzReadFrame(f *testing.F) {
	f.Add(seedStream(f), uint16(10))
	f.Add([]byte{0, 0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 1}, uint16(3))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole := decodeAll(data)
		cut := int(split) % (len(data) + 1)
		// Feed the first part, keep what was not consumed, append the rest:
		// what a connection's read buffer does.
		pending := append([]byte{}, data[:cut]...)
		consumed, frames := 0, 0
		for {
			_, n, err := ReadFrame(pending[consumed:], 1<<16)
			if err != nil || n == 0 {
				break
			}
			consumed += n
			frames++
		}
		pending = append(pending[consumed:], data[cut:]...)
		frames += decodeAll(pending)
		if frames != whole {
			t.Fatalf("split at %d found %d frames, whole input %d", cut, frames, whole)
		}
	})
}

// FuzzCheckBatch feeds random bytes to the batch checker and record iterator.
// A batch the checker accepts must iterate to exactly its count.
func FuzzCheckBatch(f *testing.F) {
	f.Add(buildBatch(f, nil, []testRecord{{ts: 5, key: []byte("key"), value: []byte("value")}}))
	f.Add(buildBatch(f, nil, []testRecord{{ts: 5, value: nil, headers: []RecordHeader{{"a", []byte("b")}}}, {ts: 1}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFuzzedBatch(t, data)
		// Random bytes rarely pass the CRC, which hides the record parser
		// from the fuzzer; check a copy with its length and CRC made right.
		if len(data) >= BatchHeaderSize {
			fixed := append([]byte{}, data...)
			binary.BigEndian.PutUint32(fixed[batchOffLength:], uint32(len(fixed)-batchLengthBase))
			checkFuzzedBatch(t, fixCRC(fixed))
		}
	})
}

func checkFuzzedBatch(t *testing.T, data []byte) {
	if len(data) >= BatchHeaderSize && Batch(data).Codec() == CodecNone {
		// The fast walk accepts exactly what decoding every record does.
		count := Batch(data).Count()
		it := RecordIter{rest: data[BatchHeaderSize:], n: count}
		_, slowErr := checkRecordsSlow(&it, count, 1<<16)
		if fast := validRecords(data[BatchHeaderSize:], count, 1<<16); fast != (slowErr == nil) {
			t.Fatalf("validRecords says %t, decoding says %v", fast, slowErr)
		}
	}
	n, err := CheckBatch(data, 1<<16, 1<<20)
	if err != nil {
		return
	}
	var d Decompressor
	it, err := d.Records(Batch(data), 1<<20)
	if err != nil {
		t.Fatalf("accepted batch does not decompress: %v", err)
	}
	var r Record
	got := 0
	for it.Next(&r) {
		got++
	}
	if it.Err() != nil || got != n {
		t.Fatalf("accepted batch of %d iterated %d (err %v)", n, got, it.Err())
	}
}

// FuzzDecompress feeds random compressed records to the broker's check of
// a compressed batch and to the consumers' Decompressor, with the batch
// header, length and CRC made right so that the fuzzer reaches the codecs:
// neither may panic or allocate past the bound, and they must agree on
// which batches are good.
func FuzzDecompress(f *testing.F) {
	for i, c := range codecs {
		b := Batch(buildCompressed(nil, jsonRecords(5+i, uint64(i)), c))
		f.Add(byte(c), uint16(b.Count()), []byte(b[BatchHeaderSize:]))
	}
	f.Add(byte(CodecLZ4), uint16(1), []byte{0, 0, 0, 9, 0x90, 8, 0, 0, 0, 0, 1, 'v', 0})
	f.Fuzz(func(t *testing.T, codec byte, count uint16, records []byte) {
		var hdr [BatchHeaderSize]byte
		hdr[batchOffMagic] = BatchMagic
		hdr[batchOffAttrs] = codec
		binary.BigEndian.PutUint32(hdr[batchOffCount:], uint32(count))
		b := append(hdr[:], records...)
		binary.BigEndian.PutUint32(b[batchOffLength:], uint32(len(b)-batchLengthBase))
		b = fixCRC(b)
		const maxBatch = 1 << 20
		n, checkErr := CheckBatch(b, 1<<16, maxBatch)
		if checkBatchHeader(b) != nil {
			if checkErr == nil {
				t.Fatal("accepted a batch whose header is bad")
			}
			return
		}
		var d Decompressor
		it, err := d.Records(Batch(b), maxBatch)
		got, tooLarge := 0, false
		if err == nil {
			var r Record
			for it.Next(&r) {
				got++
				tooLarge = tooLarge || r.size > 1<<16
			}
			err = it.Err()
		}
		if cap(d.buf) > maxBatch {
			t.Fatalf("decompressed into %d bytes, over the %d bound", cap(d.buf), maxBatch)
		}
		readable := err == nil && got == int(count) && !tooLarge
		if (checkErr == nil) != readable {
			t.Fatalf("CheckBatch says %v (n=%d), the Decompressor read %d of %d records (err %v, too large %v)",
				checkErr, n, got, count, err, tooLarge)
		}
	})
}
