package wire

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Record batch field offsets and sizes; part of the format (see the package doc).
const (
	batchOffBase     = 0
	batchOffLength   = 8
	batchOffMagic    = 12
	batchOffAttrs    = 13
	batchOffReserved = 14
	batchOffCRC      = 16
	batchOffCount    = 20
	batchOffFirstTS  = 24
	batchOffMaxTS    = 32
	batchOffProducer = 40
	batchOffSeq      = 48

	// BatchHeaderSize is the size of a record batch header.
	BatchHeaderSize = 52
	// BatchMagic is the record batch format version written by this package.
	BatchMagic = 1
	// crcStart is where the CRC-covered part of a batch begins.
	crcStart = batchOffCRC + 4
	// batchLengthBase is the number of header bytes the length field does not count.
	batchLengthBase = batchOffLength + 4
)

// castagnoli is the CRC32C table; hash/crc32 uses the SSE4.2 instruction for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RecordHeader is an application header attached to a record.
type RecordHeader struct {
	Key   string
	Value []byte
}

// Batch is a record batch in its wire form. Accessors read fields in place;
// call CheckBatch before trusting one that came from the network or a disk.
type Batch []byte

// BaseOffset is the offset of the batch's first record.
func (b Batch) BaseOffset() int64 { return int64(binary.BigEndian.Uint64(b[batchOffBase:])) }

// SetBaseOffset stamps the offset of the first record. The CRC does not cover
// it, so nothing else changes.
func (b Batch) SetBaseOffset(off int64) {
	binary.BigEndian.PutUint64(b[batchOffBase:], uint64(off))
}

// Count is the number of records.
func (b Batch) Count() int { return int(binary.BigEndian.Uint32(b[batchOffCount:])) }

// FirstTimestamp is the timestamp of the first record, Unix nanoseconds.
func (b Batch) FirstTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[batchOffFirstTS:])) }

// MaxTimestamp is the largest record timestamp, Unix nanoseconds.
func (b Batch) MaxTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[batchOffMaxTS:])) }

// ProducerID is the producer's id, -1 when none.
func (b Batch) ProducerID() int64 { return int64(binary.BigEndian.Uint64(b[batchOffProducer:])) }

// ProducerSeq is the producer sequence number of the first record, -1 when none.
func (b Batch) ProducerSeq() int32 { return int32(binary.BigEndian.Uint32(b[batchOffSeq:])) }

// CRC is the stored checksum.
func (b Batch) CRC() uint32 { return binary.BigEndian.Uint32(b[batchOffCRC:]) }

// ComputeCRC computes the checksum over the covered bytes.
func (b Batch) ComputeCRC() uint32 { return crc32.Checksum(b[crcStart:], castagnoli) }

var (
	errBatchShort   = &Error{Code: CodeCorruptBatch, Message: "batch shorter than its header"}
	errBatchLength  = &Error{Code: CodeCorruptBatch, Message: "batch length does not match its size"}
	errBatchMagic   = &Error{Code: CodeCorruptBatch, Message: "unknown batch magic"}
	errBatchAttrs   = &Error{Code: CodeCorruptBatch, Message: "unsupported batch attributes (unknown compression codec)"}
	errBatchCRC     = &Error{Code: CodeCorruptBatch, Message: "batch CRC mismatch"}
	errBatchEmpty   = &Error{Code: CodeCorruptBatch, Message: "batch has no records"}
	errBatchCount   = &Error{Code: CodeCorruptBatch, Message: "record count does not match the records"}
	errRecord       = &Error{Code: CodeCorruptBatch, Message: "malformed record"}
	errRecordOffset = &Error{Code: CodeCorruptBatch, Message: "record offset delta out of order"}
	errRecordLarge  = &Error{Code: CodeMessageTooLarge, Message: "record exceeds the maximum message size"}
)

// CheckBatch verifies a batch completely: length, magic, attributes, CRC, and
// that its records parse, are numbered 0..count-1, are no larger than
// maxMessage bytes each (key, value and headers), and fill the batch exactly.
// A compressed batch's records are decompressed to be checked, and the
// batch they make, header included, must be no larger than maxBatch bytes.
// It returns the record count. It does not allocate for a batch without
// compression, nor, once its pooled buffers have grown, for one with.
func CheckBatch(b []byte, maxMessage, maxBatch int) (int, error) {
	if err := checkBatchHeader(b); err != nil {
		return 0, err
	}
	batch := Batch(b)
	if batch.CRC() != batch.ComputeCRC() {
		return 0, errBatchCRC
	}
	if batch.Codec() != CodecNone {
		return checkCompressed(batch, maxMessage, maxBatch)
	}
	it := batch.Records()
	return checkRecords(&it, batch.Count(), maxMessage)
}

// CheckStoredBatch verifies a batch read back from storage, which was
// checked completely (CheckBatch) before it was stored: the header and CRC,
// and the records of a batch without compression. A compressed batch's
// records are not decompressed: its CRC, over the compressed bytes, is
// what tells a damaged batch, and decompressing every batch would multiply
// the cost of recovering a log.
func CheckStoredBatch(b []byte) (int, error) {
	if err := checkBatchHeader(b); err != nil {
		return 0, err
	}
	batch := Batch(b)
	if batch.CRC() != batch.ComputeCRC() {
		return 0, errBatchCRC
	}
	if batch.Codec() != CodecNone {
		if len(b) < BatchHeaderSize+compressedPrefix {
			return 0, errRecordsLen
		}
		return batch.Count(), nil
	}
	it := batch.Records()
	return checkRecords(&it, batch.Count(), math.MaxInt)
}

// checkRecords walks every record, checking each against maxMessage and
// their number against n. A well-formed batch takes the fast walk
// (validRecords); the records of one that fails it are decoded one by one
// to say what is wrong.
func checkRecords(it *RecordIter, n, maxMessage int) (int, error) {
	if it.err == nil && it.i == 0 && validRecords(it.rest, n, maxMessage) {
		return n, nil
	}
	return checkRecordsSlow(it, n, maxMessage)
}

// checkRecordsSlow is checkRecords by decoding every record (RecordIter),
// which names the first problem.
func checkRecordsSlow(it *RecordIter, n, maxMessage int) (int, error) {
	var r Record
	for it.Next(&r) {
		if r.size > maxMessage {
			return 0, errRecordLarge
		}
	}
	if it.Err() != nil {
		return 0, it.Err()
	}
	if it.i != n {
		return 0, errBatchCount
	}
	return n, nil
}

// validRecords reports whether b is exactly n well-formed records, each
// within maxMessage: what checkRecordsSlow accepts, found without
// decoding records into Record values, which costs a broker a third of its
// time on small messages. It reads every length once, by index.
func validRecords(b []byte, n, maxMessage int) bool {
	i := 0
	for rec := range n {
		length, j := uvarintAt(b, i)
		if j < 0 || length > uint64(len(b)-j) {
			return false
		}
		end := j + int(length)
		body := b[:end]
		if j >= end || body[j] != 0 { // attributes
			return false
		}
		if _, j = uvarintAt(body, j+1); j < 0 { // timestamp delta
			return false
		}
		off, j := uvarintAt(body, j)
		if j < 0 || off != uint64(rec) {
			return false
		}
		zkey, j := uvarintAt(body, j)
		if j < 0 {
			return false
		}
		size := 0
		if zkey != 1 { // not -1, no key
			if zkey&1 != 0 || zkey>>1 > uint64(end-j) {
				return false
			}
			size = int(zkey >> 1)
			j += size
		}
		vlen, j := uvarintAt(body, j)
		if j < 0 || vlen > uint64(end-j) {
			return false
		}
		size += int(vlen)
		j += int(vlen)
		hn, j := uvarintAt(body, j)
		if j < 0 {
			return false
		}
		size += end - j
		for range hn {
			if j = skipLenPrefixed(body, j); j < 0 {
				return false
			}
			if j = skipLenPrefixed(body, j); j < 0 {
				return false
			}
		}
		if j != end || size > maxMessage {
			return false
		}
		i = end
	}
	return i == len(b)
}

// uvarintAt decodes the uvarint at b[i:], returning it and the index after
// it, or -1 for the index when it is malformed or cut short.
func uvarintAt(b []byte, i int) (uint64, int) {
	if i < len(b) && b[i] < 0x80 {
		return uint64(b[i]), i + 1
	}
	return uvarintAtSlow(b, i)
}

func uvarintAtSlow(b []byte, i int) (uint64, int) {
	if i < 0 || i >= len(b) {
		return 0, -1
	}
	v, k := binary.Uvarint(b[i:])
	if k <= 0 {
		return 0, -1
	}
	return v, i + k
}

// skipLenPrefixed returns the index after the uvarint-prefixed byte string
// at b[i:], or -1 when it is malformed or runs past b.
func skipLenPrefixed(b []byte, i int) int {
	n, j := uvarintAt(b, i)
	if j < 0 || n > uint64(len(b)-j) {
		return -1
	}
	return j + int(n)
}

// checkBatchHeader verifies what the header alone can tell: the size and
// length field, the magic, the attributes (a known codec) and reserved
// bytes, and a non-zero record count.
func checkBatchHeader(b []byte) error {
	switch {
	case len(b) < BatchHeaderSize:
		return errBatchShort
	case int(binary.BigEndian.Uint32(b[batchOffLength:])) != len(b)-batchLengthBase:
		return errBatchLength
	case b[batchOffMagic] != BatchMagic:
		return errBatchMagic
	case !ValidAttributes(b[batchOffAttrs]) || b[batchOffReserved] != 0 || b[batchOffReserved+1] != 0:
		return errBatchAttrs
	case binary.BigEndian.Uint32(b[batchOffCount:]) == 0:
		return errBatchEmpty
	}
	return nil
}

// BatchSize reads the total size of the batch at the start of b from its
// length field, or returns -1 when b is shorter than the length field.
func BatchSize(b []byte) int {
	if len(b) < batchLengthBase {
		return -1
	}
	return batchLengthBase + int(binary.BigEndian.Uint32(b[batchOffLength:]))
}

// Record is one decoded record. Key, Value and the headers alias the batch.
type Record struct {
	Offset    int64
	Timestamp int64 // Unix nanoseconds
	Key       []byte
	Value     []byte
	headers   []byte
	nHeaders  int
	size      int
}

// HeaderCount is the number of application headers.
func (r *Record) HeaderCount() int { return r.nHeaders }

// Headers calls fn for each header in order. The slices alias the batch.
func (r *Record) Headers(fn func(key, value []byte)) {
	b := r.headers
	for range r.nHeaders {
		var k, v []byte
		k, b = lenPrefixed(b)
		v, b = lenPrefixed(b)
		fn(k, v)
	}
}

// RecordIter walks the records of a batch. The zero value yields nothing.
type RecordIter struct {
	rest    []byte
	base    int64
	firstTS int64
	i, n    int
	err     error
}

// Records returns an iterator over the batch's records. The batch header must
// have been checked. A compressed batch yields nothing and an error: its
// records are read through a Decompressor.
func (b Batch) Records() RecordIter {
	if b.Codec() != CodecNone {
		return RecordIter{err: errCompressed}
	}
	return recordIter(b, b[BatchHeaderSize:])
}

// recordIter iterates over records, plain, with b's header fields.
func recordIter(b Batch, records []byte) RecordIter {
	return RecordIter{rest: records, base: b.BaseOffset(), firstTS: b.FirstTimestamp(), n: b.Count()}
}

// Err returns the error that stopped the iteration, if any.
func (it *RecordIter) Err() error { return it.err }

// Next decodes the next record into r. It returns false at the end of the
// batch or on a malformed record (see Err).
func (it *RecordIter) Next(r *Record) bool {
	if it.err != nil {
		return false
	}
	if len(it.rest) == 0 {
		if it.i != it.n {
			it.err = errBatchCount
		}
		return false
	}
	if it.i >= it.n {
		it.err = errBatchCount
		return false
	}
	length, k := uvarint(it.rest)
	if k <= 0 || length > uint64(len(it.rest)-k) {
		it.err = errRecord
		return false
	}
	body := it.rest[k : k+int(length)]
	it.rest = it.rest[k+int(length):]
	if err := parseRecord(body, it, r); err != nil {
		it.err = err
		return false
	}
	it.i++
	return true
}

func parseRecord(b []byte, it *RecordIter, r *Record) error {
	if len(b) < 1 || b[0] != 0 {
		return errRecord
	}
	b = b[1:]
	tsDelta, k := varint(b)
	if k <= 0 {
		return errRecord
	}
	b = b[k:]
	offDelta, k := uvarint(b)
	if k <= 0 || offDelta != uint64(it.i) {
		return errRecordOffset
	}
	b = b[k:]
	keyLen, k := varint(b)
	if k <= 0 || keyLen < -1 || keyLen > int64(len(b)-k) {
		return errRecord
	}
	b = b[k:]
	r.Key = nil
	if keyLen >= 0 {
		r.Key, b = b[:keyLen:keyLen], b[keyLen:]
	}
	if r.Value, b = lenPrefixed(b); b == nil && r.Value == nil {
		return errRecord
	}
	hn, k := uvarint(b)
	if k <= 0 || hn > uint64(len(b)) {
		return errRecord
	}
	r.headers = b[k:]
	if !validHeaders(r.headers, int(hn)) {
		return errRecord
	}
	r.nHeaders = int(hn)
	r.Offset = it.base + int64(it.i)
	r.Timestamp = it.firstTS + tsDelta
	r.size = len(r.Key) + len(r.Value) + len(r.headers)
	return nil
}

// lenPrefixed splits a uvarint-prefixed byte string off b. On a malformed
// prefix it returns nil, nil.
func lenPrefixed(b []byte) (v, rest []byte) {
	n, k := uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil
	}
	end := k + int(n)
	return b[k:end:end], b[end:]
}

func validHeaders(b []byte, n int) bool {
	for range n {
		var k, v []byte
		if k, b = lenPrefixed(b); b == nil && k == nil {
			return false
		}
		if v, b = lenPrefixed(b); b == nil && v == nil {
			return false
		}
	}
	return len(b) == 0
}

// uvarint is binary.Uvarint with a fast path for one-byte values, which are
// most lengths and offset deltas.
func uvarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return binary.Uvarint(b)
}

func varint(b []byte) (int64, int) {
	ux, n := uvarint(b)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, n
}

// uvarintLen is the encoded size of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

// BatchBuilder appends records to a batch being built at the end of a buffer.
// The zero value is not usable; call Start. It is not safe for concurrent use.
type BatchBuilder struct {
	buf     []byte
	start   int
	count   int
	firstTS int64
	maxTS   int64
}

// Start begins a batch at the end of dst (which may already hold a frame
// header and other body fields). The builder takes ownership of dst until
// Finish returns it.
func (b *BatchBuilder) Start(dst []byte, producerID int64, seq int32) {
	b.start, b.count, b.firstTS, b.maxTS = len(dst), 0, 0, math.MinInt64
	var hdr [BatchHeaderSize]byte
	hdr[batchOffMagic] = BatchMagic
	binary.BigEndian.PutUint64(hdr[batchOffProducer:], uint64(producerID))
	binary.BigEndian.PutUint32(hdr[batchOffSeq:], uint32(seq))
	b.buf = append(dst, hdr[:]...)
}

// Count is the number of records appended since Start.
func (b *BatchBuilder) Count() int { return b.count }

// Size is the size of the batch so far, in bytes.
func (b *BatchBuilder) Size() int { return len(b.buf) - b.start }

// RecordSize is the number of bytes Append adds for a record.
func RecordSize(tsDelta int64, offsetDelta int, key, value []byte, headers []RecordHeader) int {
	body := recordBodySize(tsDelta, offsetDelta, key, value, headers)
	return uvarintLen(uint64(body)) + body
}

func recordBodySize(tsDelta int64, offsetDelta int, key, value []byte, headers []RecordHeader) int {
	n := 1 + varintLen(tsDelta) + uvarintLen(uint64(offsetDelta))
	if key == nil {
		n++
	} else {
		n += varintLen(int64(len(key))) + len(key)
	}
	n += uvarintLen(uint64(len(value))) + len(value) + uvarintLen(uint64(len(headers)))
	for _, h := range headers {
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key) + uvarintLen(uint64(len(h.Value))) + len(h.Value)
	}
	return n
}

// MessageSize is the size of a record as the maximum message size counts
// it: key, value and encoded headers. Client and broker use the same rule.
func MessageSize(key, value []byte, headers []RecordHeader) int {
	n := len(key) + len(value)
	for _, h := range headers {
		n += uvarintLen(uint64(len(h.Key))) + len(h.Key) + uvarintLen(uint64(len(h.Value))) + len(h.Value)
	}
	return n
}

// Append adds a record with timestamp ts (Unix nanoseconds). A nil key means
// "no key"; an empty non-nil key is a key of length zero.
func (b *BatchBuilder) Append(ts int64, key, value []byte, headers []RecordHeader) {
	if b.count == 0 {
		b.firstTS = ts
	}
	if ts > b.maxTS {
		b.maxTS = ts
	}
	delta := ts - b.firstTS
	buf := binary.AppendUvarint(b.buf, uint64(recordBodySize(delta, b.count, key, value, headers)))
	buf = append(buf, 0)
	buf = binary.AppendVarint(buf, delta)
	buf = binary.AppendUvarint(buf, uint64(b.count))
	if key == nil {
		buf = append(buf, 1) // zig-zag -1
	} else {
		buf = binary.AppendVarint(buf, int64(len(key)))
		buf = append(buf, key...)
	}
	buf = binary.AppendUvarint(buf, uint64(len(value)))
	buf = append(buf, value...)
	buf = binary.AppendUvarint(buf, uint64(len(headers)))
	for _, h := range headers {
		buf = binary.AppendUvarint(buf, uint64(len(h.Key)))
		buf = append(buf, h.Key...)
		buf = binary.AppendUvarint(buf, uint64(len(h.Value)))
		buf = append(buf, h.Value...)
	}
	b.buf = buf
	b.count++
}

// Finish completes the header (length, count, timestamps, CRC) and returns
// the whole buffer passed to Start, now ending with the batch. A batch needs
// at least one record to be valid.
func (b *BatchBuilder) Finish() []byte {
	h := b.buf[b.start:]
	binary.BigEndian.PutUint32(h[batchOffLength:], uint32(len(h)-batchLengthBase))
	binary.BigEndian.PutUint32(h[batchOffCount:], uint32(b.count))
	binary.BigEndian.PutUint64(h[batchOffFirstTS:], uint64(b.firstTS))
	maxTS := b.maxTS
	if b.count == 0 {
		maxTS = 0
	}
	binary.BigEndian.PutUint64(h[batchOffMaxTS:], uint64(maxTS))
	binary.BigEndian.PutUint32(h[batchOffCRC:], Batch(h).ComputeCRC())
	buf := b.buf
	b.buf = nil
	return buf
}

// SetProducer sets the producer id and sequence of the batch being built,
// for a producer that numbers a batch only once it is complete. Call it
// before Finish, which computes the CRC over them.
func (b *BatchBuilder) SetProducer(producerID int64, seq int32) {
	h := b.buf[b.start:]
	binary.BigEndian.PutUint64(h[batchOffProducer:], uint64(producerID))
	binary.BigEndian.PutUint32(h[batchOffSeq:], uint32(seq))
}
