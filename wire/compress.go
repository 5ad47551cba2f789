package wire

import (
	"encoding/binary"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Batch compression. A compressed batch keeps its 52-byte header as it is
// (record count, timestamps and producer fields stay readable, so the
// broker stores, indexes and forwards it without looking inside) and
// replaces its records section with:
//
//	offset size field
//	    52    4 records length  uint32, size of the records once decompressed
//	    56      compressed      the records in the codec's format, to the end
//
// The codec is in the low three bits of the attributes byte; the other five
// bits are 0. The CRC covers the bytes as stored, so it is computed after
// compressing and checked before decompressing.

// Codec is a batch's compression codec: the low three bits of its
// attributes byte. The values are part of the format.
type Codec uint8

// Codecs.
const (
	CodecNone Codec = 0 // records as they are
	// CodecLZ4 is an LZ4 block (the block format, not the frame format).
	CodecLZ4 Codec = 1
	// CodecZstd is one Zstandard frame, with its content size.
	CodecZstd Codec = 2
	// CodecSnappy is a Snappy block (the block format, not the framing
	// format).
	CodecSnappy Codec = 3

	codecMask = 0x07
	maxCodec  = CodecSnappy
	// compressedPrefix is the records-length field before compressed records.
	compressedPrefix = 4
)

// MaxBatchBytes bounds a batch decompressed by a reader of batches the
// broker has checked and stored (a consumer, the broker's dead-letter
// copy): the largest frame a broker can be configured to accept, since a
// batch holds no more records compressed than it could plain. A publish
// is checked against the broker's own maximum frame size instead.
const MaxBatchBytes = 256 << 20

// MinCompressBytes is the smallest records section a producer compresses.
// A single message rarely shrinks: a 242-byte JSON log line grew under
// zstd and Snappy, and LZ4 found nothing to match in it. Two such lines
// (468 bytes) shrank by 90 to 170 bytes for 1.4 µs (LZ4) to 10 µs (zstd)
// of CPU per batch, which at the low rates that make batches this small
// buys nothing worth the latency. See docs/PERFORMANCE.md, "Issue 13:
// compression".
const MinCompressBytes = 512

var codecNames = [...]string{CodecNone: "none", CodecLZ4: "lz4", CodecZstd: "zstd", CodecSnappy: "snappy"}

// String names the codec as ParseCodec reads it.
func (c Codec) String() string {
	if c <= maxCodec {
		return codecNames[c]
	}
	return "codec " + strconv.Itoa(int(c))
}

// ParseCodec reads a codec name: none, lz4, zstd or snappy.
func ParseCodec(s string) (Codec, error) {
	for c, name := range codecNames {
		if strings.EqualFold(s, name) {
			return Codec(c), nil
		}
	}
	return 0, Errorf(CodeInvalidArgument, "unknown compression codec "+strconv.Quote(s)+" (none, lz4, zstd, snappy)")
}

// Codecs lists the codec names, for help texts.
func Codecs() []string { return codecNames[:] }

// Codec is the batch's compression codec.
func (b Batch) Codec() Codec { return Codec(b[batchOffAttrs] & codecMask) }

// ValidAttributes reports whether a is an attributes byte this version
// reads: a known codec and the other bits 0.
func ValidAttributes(a byte) bool { return a&^codecMask == 0 && Codec(a) <= maxCodec }

var (
	errDecompress = &Error{Code: CodeCorruptBatch, Message: "compressed records do not decompress"}
	errRecordsLen = &Error{Code: CodeCorruptBatch, Message: "compressed records shorter than their length field"}
	errCompressed = &Error{Code: CodeCorruptBatch, Message: "batch is compressed: decompress it to read its records"}
)

// errDecompressedSize refuses a compressed batch that claims more than the
// maximum: a batch may not carry, compressed, more than it could carry
// plain, which also keeps a small frame from making the reader allocate a
// large buffer.
func errDecompressedSize(n uint32, maxBatch int) error {
	return Errorf(CodeCorruptBatch, "records decompress to "+strconv.FormatUint(uint64(n), 10)+
		" bytes; a batch may hold at most "+strconv.Itoa(maxBatch)+" bytes, its header included")
}

// Decompressor reads the records of compressed batches into a buffer it
// keeps and reuses, so that a reader (a subscription, a fetch) allocates
// nothing per batch once the buffer has grown. Codec state comes from
// package-wide pools. It is not safe for concurrent use.
type Decompressor struct {
	buf []byte
}

// Records returns an iterator over b's records, decompressing them first
// when b is compressed; maxBatch bounds the decompressed batch (header
// included). The records decompressed alias the Decompressor's buffer
// until its next call. b's header must have been checked (see
// DecodeBatchView), and for data not checked by the broker its CRC too.
func (d *Decompressor) Records(b Batch, maxBatch int) (RecordIter, error) {
	if b.Codec() == CodecNone {
		return b.Records(), nil
	}
	recs, err := decompressRecords(b, d.buf[:0], maxBatch)
	if cap(recs) > cap(d.buf) {
		d.buf = recs[:0]
	}
	if err != nil {
		return RecordIter{}, err
	}
	return recordIter(b, recs), nil
}

// decompressRecords decompresses b's records into dst's backing array,
// growing it to the size the length field gives (at most maxBatch minus
// the header) when needed.
func decompressRecords(b Batch, dst []byte, maxBatch int) ([]byte, error) {
	src := b[BatchHeaderSize:]
	if len(src) < compressedPrefix {
		return dst, errRecordsLen
	}
	n := binary.BigEndian.Uint32(src)
	src = src[compressedPrefix:]
	if uint64(n) > uint64(max(maxBatch-BatchHeaderSize, 0)) {
		return dst, errDecompressedSize(n, maxBatch)
	}
	if cap(dst) < int(n) {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if !decompress(b.Codec(), dst, src) {
		return dst, errDecompress
	}
	return dst, nil
}

// decompress fills dst, exactly, from src in codec's format.
func decompress(c Codec, dst, src []byte) bool {
	if len(dst) == 0 {
		return false // a batch has at least one record
	}
	switch c {
	case CodecLZ4:
		k, err := lz4.UncompressBlock(src, dst)
		return err == nil && k == len(dst)
	case CodecSnappy:
		// The strict decoder refuses S2's extensions to the block format,
		// so what the broker accepts as Snappy any Snappy decoder reads.
		if k, err := snappy.DecodedLen(src); err != nil || k != len(dst) {
			return false
		}
		out, err := snappy.DecodeStrict(dst, src)
		return err == nil && len(out) == len(dst) && &out[0] == &dst[0]
	case CodecZstd:
		// The decoder is limited to dst's capacity, so a frame that
		// decodes to more fails instead of growing a buffer.
		out, err := zstdDecoder().DecodeAll(src, dst[:0:len(dst)])
		return err == nil && len(out) == len(dst)
	}
	return false
}

// zstdDecoder is shared: DecodeAll is safe for concurrent use and keeps
// one decoder state per concurrent caller, up to GOMAXPROCS.
var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		panic("wire: zstd decoder options: " + err.Error())
	}
	return d
})

// zstdEncoder is shared as the decoder is. Its level is the fastest
// (about zstd's 1), not the default (about 3, what Kafka producers use):
// on batches of JSON lines it compressed as well (ratio 4.59 against
// 4.52) at 1.6 times the speed (306 against 189 MB/s of CPU time; see
// docs/PERFORMANCE.md). The frame checksum is off because the batch CRC
// covers the frame.
var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		panic("wire: zstd encoder options: " + err.Error())
	}
	return e
})

// lz4Compressors pools LZ4 compressors, each a 16 KiB hash table.
var lz4Compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// scratchPool holds buffers for compressing into and for checking
// compressed batches; buffers above maxPooledScratch are left to the GC.
var scratchPool sync.Pool

const maxPooledScratch = 8 << 20

func getScratch(n int) *[]byte {
	if p, ok := scratchPool.Get().(*[]byte); ok && cap(*p) >= n {
		return p
	}
	b := make([]byte, 0, max(n, 64<<10))
	return &b
}

func putScratch(p *[]byte) {
	if cap(*p) <= maxPooledScratch {
		*p = (*p)[:0]
		scratchPool.Put(p)
	}
}

// compressRecords appends src's records-length field and compressed form
// to dst, and reports whether the result is smaller than src. dst must
// have room for compressBound(len(src)) bytes, or the codec allocates.
func compressRecords(c Codec, dst, src []byte) ([]byte, bool) {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(src)))
	switch c {
	case CodecLZ4:
		// Output only counts when it is smaller than src, so the block
		// gets no more room than that; LZ4 gives up when it runs out.
		z := lz4Compressors.Get().(*lz4.Compressor)
		k, err := z.CompressBlock(src, dst[compressedPrefix:len(src)])
		lz4Compressors.Put(z)
		if err != nil || k == 0 {
			return dst, false
		}
		dst = dst[:compressedPrefix+k]
	case CodecSnappy:
		// s2's Snappy-compatible encoder writes the standard block format.
		dst = dst[:compressedPrefix+len(s2.EncodeSnappy(dst[compressedPrefix:cap(dst)], src))]
	case CodecZstd:
		dst = zstdEncoder().EncodeAll(src, dst)
	default:
		return dst, false
	}
	return dst, len(dst) < len(src)
}

// compressBound is room enough for any codec's output for n bytes.
func compressBound(n int) int { return compressedPrefix + max(s2.MaxEncodedLen(n), n+n/128+64) }

// FinishCompressed is Finish after compressing the records with codec when
// that makes the batch smaller. A batch whose records are under
// MinCompressBytes, or that does not shrink, stays uncompressed (attributes
// 0), which every reader handles, so the caller need not check.
func (b *BatchBuilder) FinishCompressed(codec Codec) []byte {
	if codec != CodecNone && codec <= maxCodec {
		b.compress(codec)
	}
	return b.Finish()
}

func (b *BatchBuilder) compress(codec Codec) {
	recs := b.buf[b.start+BatchHeaderSize:]
	if len(recs) < MinCompressBytes {
		return
	}
	scratch := getScratch(compressBound(len(recs)))
	out, smaller := compressRecords(codec, (*scratch)[:0], recs)
	if smaller {
		n := copy(recs, out)
		b.buf = b.buf[:b.start+BatchHeaderSize+n]
		b.buf[b.start+batchOffAttrs] = byte(codec)
	}
	*scratch = out
	putScratch(scratch)
}

// checkCompressed verifies a compressed batch's records by decompressing
// them into a pooled buffer.
func checkCompressed(b Batch, maxMessage, maxBatch int) (int, error) {
	scratch := getScratch(0)
	recs, err := decompressRecords(b, (*scratch)[:0], maxBatch)
	if cap(recs) > cap(*scratch) {
		*scratch = recs[:0]
	}
	n := 0
	if err == nil {
		it := recordIter(b, recs)
		n, err = checkRecords(&it, b.Count(), maxMessage)
	}
	putScratch(scratch)
	return n, err
}
