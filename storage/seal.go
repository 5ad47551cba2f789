package storage

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Sealed batches: the on-disk form of a batch in an encrypted log (a topic
// with encryption at rest; DiskConfig.Keys). Part of the storage format.
//
//	offset size field
//	     0   52 the batch header, in the clear, as in package wire, except:
//	            length    counts the sealed form (the plain length + 48)
//	            attributes bit 7 (attrSealed) set; bits 0-2 keep the codec
//	            CRC32C    over bytes 20 to the end of the sealed form
//	    52    1 seal version       1
//	    53    3 reserved           0
//	    56    4 data key id        uint32, the topic's key that sealed it
//	    60   16 salt               the writer run's (see crypt.RunAEAD)
//	    76    8 nonce counter      uint64; the GCM nonce is 4 zero bytes and it
//	    84    n ciphertext         AES-256-GCM of the batch's records (n = plain length - 52)
//	  84+n   16 GCM tag
//
// What stays in the clear is what recovery and the indexes need without
// keys: base offset, length, count, timestamps, producer id and sequence.
// All of it but the CRC is authenticated (the associated data is bytes
// 0-15 and 20-83), so a batch moved to another offset, or a header
// altered, fails authentication like altered records do. The CRC covers
// the sealed bytes, so torn tails and damage are found, and recovered
// from, exactly as in a plain log, without keys and without decrypting.
//
// A plain batch has attribute bit 7 clear, so a log's segments written
// before encryption existed read as they always did; a version of the
// broker that predates sealing refuses a sealed batch (an unknown
// attribute) rather than serving ciphertext.
const (
	attrSealed   = 0x80
	sealVersion  = 1
	sealPrefix   = 32
	sealTag      = 16
	sealOverhead = sealPrefix + sealTag
	sealedBody   = wire.BatchHeaderSize + sealPrefix // where the ciphertext starts
	sealAADSize  = 16 + sealedBody - 20
	crcOff       = 16
)

var (
	// ErrUnknownKey is a sealed batch whose data key the topic does not
	// hold: a keyring that lost a key, or a segment from another topic.
	ErrUnknownKey = errors.New("storage: batch sealed with a data key this topic does not hold")
	// ErrSealedWithoutKeys is a sealed batch in a log opened without keys:
	// a topic recorded as unencrypted whose data is encrypted.
	ErrSealedWithoutKeys = errors.New("storage: log holds encrypted batches but was opened without data keys")
	// errNoDataKey is an encrypted log whose keyring has no current key.
	errNoDataKey = errors.New("storage: encrypted log has no current data key")
	// errOpen is a sealed batch that fails authentication.
	errOpen = errors.New("storage: sealed batch fails authentication")
)

// isSealed reports whether the batch header at b is sealed.
func isSealed(b []byte) bool { return b[13]&attrSealed != 0 }

// storedSize is the size batch b takes in a log that seals (or not).
func storedSize(b wire.Batch, seal bool) int {
	if seal {
		return len(b) + sealOverhead
	}
	return len(b)
}

// checkStoredBatch verifies a batch read back from a segment: a plain
// one as wire.CheckStoredBatch does, a sealed one by its header and its
// CRC (its records are checked when it is opened, by the GCM tag).
func checkStoredBatch(b []byte) error {
	if len(b) < wire.BatchHeaderSize || !isSealed(b) {
		_, err := wire.CheckStoredBatch(b)
		return err
	}
	if !sealedHeaderOK(b, int64(wire.BatchSize(b)), int64(len(b))) || wire.BatchSize(b) != len(b) {
		return errSealedHeader
	}
	if binary.BigEndian.Uint32(b[crcOff:]) != crc32.Checksum(b[20:], castagnoli) {
		return errSealedCRC
	}
	return nil
}

var (
	errSealedHeader = errors.New("storage: sealed batch header is malformed")
	errSealedCRC    = errors.New("storage: sealed batch CRC mismatch")
)

// sealedHeaderOK checks the header and prefix fields of a sealed batch of
// size bytes that the CRC does not cover, given room bytes to hold it
// (b holds at least the header).
func sealedHeaderOK(b []byte, size, room int64) bool {
	return size >= wire.BatchHeaderSize+sealOverhead && size <= room && b[12] == wire.BatchMagic &&
		wire.ValidAttributes(b[13]&^attrSealed) && b[14] == 0 && b[15] == 0 &&
		binary.BigEndian.Uint32(b[20:]) != 0
}

// sealedKeyID is the data key id of a sealed batch (b holds its prefix).
func sealedKeyID(b []byte) uint32 { return binary.BigEndian.Uint32(b[wire.BatchHeaderSize+4:]) }

// sealAAD gathers the associated data of the sealed batch at b.
func sealAAD(dst *[sealAADSize]byte, b []byte) []byte {
	copy(dst[:16], b[:16])
	copy(dst[16:], b[20:sealedBody])
	return dst[:]
}

// sealer seals the writer's batches. It belongs to the writer (under the
// log's wmu). A run, one salt and the subkey it derives, covers one
// segment as this process writes it, and the key current when it began;
// its nonces count up and never go back, also across a failed write that
// is cut off, so no nonce repeats under a subkey.
type sealer struct {
	keys  *crypt.Keyring
	seg   *segment
	keyID uint32
	salt  [crypt.SaltSize]byte
	aead  cipher.AEAD
	n     uint64
	buf   []byte // the sealed group, for buffered writes
	// Scratch for the nonce and associated data: on the stack they would
	// escape (AEAD is an interface), two allocations per batch.
	scratch sealScratch
}

// sealScratch holds a seal's or an open's nonce and associated data.
type sealScratch struct {
	nonce [12]byte
	ad    [sealAADSize]byte
}

// begin starts a run for segment s when there is none for it and the
// current key.
func (w *sealer) begin(s *segment) error {
	id, key, ok := w.keys.Current()
	if !ok {
		return errNoDataKey
	}
	if w.aead != nil && w.seg == s && w.keyID == id {
		return nil
	}
	salt := crypt.NewSalt()
	aead, err := crypt.RunAEAD(key, salt[:])
	if err != nil {
		return err
	}
	w.seg, w.keyID, w.salt, w.aead, w.n = s, id, salt, aead, 0
	return nil
}

// put writes batch b sealed at the start of dst, which holds at least
// len(b)+sealOverhead bytes, and returns the bytes written.
func (w *sealer) put(dst []byte, b wire.Batch) int {
	n := len(b) + sealOverhead
	dst = dst[:n]
	copy(dst, b[:wire.BatchHeaderSize])
	binary.BigEndian.PutUint32(dst[8:], uint32(n-12))
	dst[13] |= attrSealed
	p := dst[wire.BatchHeaderSize:sealedBody]
	p[0], p[1], p[2], p[3] = sealVersion, 0, 0, 0
	binary.BigEndian.PutUint32(p[4:], w.keyID)
	copy(p[8:], w.salt[:])
	binary.BigEndian.PutUint64(p[24:], w.n)
	nonce := crypt.Nonce(&w.scratch.nonce, w.n)
	w.n++
	w.aead.Seal(dst[sealedBody:sealedBody], nonce, b[wire.BatchHeaderSize:], sealAAD(&w.scratch.ad, dst))
	binary.BigEndian.PutUint32(dst[crcOff:], crc32.Checksum(dst[20:], castagnoli))
	return n
}

// group seals batches back to back into the sealer's buffer.
func (w *sealer) group(batches []wire.Batch) []byte {
	total := 0
	for _, b := range batches {
		total += len(b) + sealOverhead
	}
	if cap(w.buf) < total {
		w.buf = make([]byte, total)
	}
	out := w.buf[:total]
	at := 0
	for _, b := range batches {
		at += w.put(out[at:], b)
	}
	return out
}

// opener opens sealed batches for a log's readers, from any goroutine. It
// remembers the subkeys of the runs it met (a few per segment at most),
// up to maxRuns, then starts over.
type opener struct {
	keys *crypt.Keyring
	mu   sync.RWMutex
	runs map[runKey]cipher.AEAD
}

// openState is one read's: its scratch, and the run it met last (a
// replay meets the same run batch after batch, and skips the lookup).
type openState struct {
	sealScratch
	last     runKey
	lastAEAD cipher.AEAD
}

const maxRuns = 4096

type runKey struct {
	id   uint32
	salt [crypt.SaltSize]byte
}

// aead returns the subkey of the run that sealed b.
func (o *opener) aead(st *openState, b []byte) (cipher.AEAD, error) {
	var k runKey
	k.id = sealedKeyID(b)
	copy(k.salt[:], b[wire.BatchHeaderSize+8:])
	if st.lastAEAD != nil && st.last == k {
		return st.lastAEAD, nil
	}
	o.mu.RLock()
	a, ok := o.runs[k]
	o.mu.RUnlock()
	if !ok {
		key, ok := o.keys.Key(k.id)
		if !ok {
			return nil, fmt.Errorf("%w (key id %d)", ErrUnknownKey, k.id)
		}
		salt := k.salt // a copy: the one passed on escapes, and k is on every read's path
		var err error
		if a, err = crypt.RunAEAD(key, salt[:]); err != nil {
			return nil, err
		}
		o.mu.Lock()
		if o.runs == nil || len(o.runs) >= maxRuns {
			o.runs = map[runKey]cipher.AEAD{}
		}
		o.runs[k] = a
		o.mu.Unlock()
	}
	st.last, st.lastAEAD = k, a
	return a, nil
}

// open decrypts the sealed batch b, whose CRC and header were checked,
// into the plain batch the producer sent, in *dst (grown as needed). It
// fails with errOpen when b does not authenticate, and ErrUnknownKey.
func (o *opener) open(st *openState, dst *[]byte, b []byte) (wire.Batch, error) {
	if b[wire.BatchHeaderSize] != sealVersion {
		return nil, errOpen
	}
	a, err := o.aead(st, b)
	if err != nil {
		return nil, err
	}
	n := len(b) - sealOverhead
	if cap(*dst) < n {
		*dst = make([]byte, n)
	}
	out := (*dst)[:n]
	nonce := crypt.Nonce(&st.nonce, binary.BigEndian.Uint64(b[wire.BatchHeaderSize+24:]))
	if _, err := a.Open(out[wire.BatchHeaderSize:wire.BatchHeaderSize], nonce, b[sealedBody:], sealAAD(&st.ad, b)); err != nil {
		return nil, errOpen
	}
	copy(out, b[:wire.BatchHeaderSize])
	binary.BigEndian.PutUint32(out[8:], uint32(n-12))
	out[13] &^= attrSealed
	binary.BigEndian.PutUint32(out[crcOff:], crc32.Checksum(out[20:], castagnoli))
	return wire.Batch(out), nil
}
