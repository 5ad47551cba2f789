// Package wire defines Ratatoskr's binary protocol, versions 1 and 2 (2
// adds each partition's state to TopicInfo; nothing else differs): the frame
// header, the bodies of every request and response, and the record batch that
// travels unchanged from a producer, through the log, to every subscriber.
//
// The package does no I/O. Encoders are append-style (AppendX(dst, ...) []byte)
// so callers choose and reuse their buffers; decoders read from a byte slice
// in place and never allocate per frame. The normative description, with
// every field, is docs/PROTOCOL.md; the layouts are repeated here because the
// constants below are part of the format and must not change within a version.
//
// # Frame
//
// Every frame starts with a 12-byte header. All integers are big-endian.
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|              length (whole frame, header included)            |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     type      |     flags     |         reserved (0)          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        correlation id                         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                          body ...                             |
//
// A response carries the correlation id of its request. Frames the server
// sends on its own (Deliver, connection-level Error) carry 0.
//
// # Publish and Deliver
//
// Publish and Deliver have the same body, so the broker turns a publish into
// the delivery that every subscriber receives by rewriting the type byte,
// the flags (to 0), the correlation id, the partition and the batch's base
// offset in place:
//
//	+--------+----------------+---------------+--------------------+
//	| header | topic (str16)  | partition i32 | record batch ...   |
//	+--------+----------------+---------------+--------------------+
//
// # Record batch
//
//	offset size field
//	     0    8 base offset        int64, stamped by the broker (0 from producers)
//	     8    4 batch length       uint32, bytes after this field
//	    12    1 magic              1
//	    13    1 attributes         bits 0-2: compression codec (0 none, 1 lz4, 2 zstd, 3 snappy)
//	    14    2 reserved           0
//	    16    4 CRC32C             Castagnoli, over bytes 20 to the end
//	    20    4 record count       uint32, at least 1
//	    24    8 first timestamp    int64, Unix nanoseconds
//	    32    8 max timestamp      int64, Unix nanoseconds
//	    40    8 producer id        int64, -1 when none
//	    48    4 producer sequence  int32, sequence of the first record, -1 when none
//	    52      records
//
// The CRC does not cover the base offset or the length, so the broker stamps
// offsets without re-encoding or re-hashing anything.
//
// A compressed batch (attributes codec not 0; see compress.go) keeps this
// header plain and replaces the records with a uint32 records length and
// the records in the codec's format; the CRC covers them as stored.
//
// # Record
//
//	length          uvarint  bytes after this field
//	attributes      uint8    0
//	timestamp delta varint   (zig-zag) nanoseconds after the first timestamp
//	offset delta    uvarint  index of the record in its batch
//	key length      varint   (zig-zag) -1 for no key
//	key             bytes
//	value length    uvarint
//	value           bytes
//	header count    uvarint
//	headers         (key length uvarint, key, value length uvarint, value) each
package wire
