// Package crypt holds the keys of encryption at rest: the master key that
// wraps every topic's data keys (behind KeyProvider, so a KMS can take its
// place), a topic's Keyring of data keys, and the derivation of the
// per-run subkeys that seal a log's batches (package storage lays out the
// sealed batches; see storage/seal.go).
//
// Key hierarchy:
//
//	master key (32 bytes, a key file or RATATOSKR_MASTER_KEY; never on the data disk)
//	  └─ wraps, AES-256-GCM, bound to topic and key id: each topic's data keys (32 random bytes),
//	     kept wrapped in topics.json
//	       └─ HMAC-SHA256(data key, label || salt): the subkey of one writer run
//	          (a segment as one process writes it), which seals its batches
//	          with AES-256-GCM under counter nonces
//
// It uses the standard library only.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// KeySize is the size of a master key and of a data key: AES-256.
const KeySize = 32

var (
	// ErrBadMasterKey is a master key file or variable that is not 32 bytes,
	// raw or as 64 hex digits.
	ErrBadMasterKey = errors.New("crypt: a master key is 32 bytes: 64 hex digits (a trailing newline is allowed) or 32 raw bytes")
	// ErrUnwrap is a wrapped data key that does not open under the master
	// key: the wrong master key, or a damaged or altered wrapped key.
	ErrUnwrap = errors.New("crypt: wrapped data key does not open under this master key")
)

// KeyProvider wraps and unwraps data keys. The broker holds data keys only
// wrapped on disk; the provider holds (or reaches) the key that opens
// them. context binds a wrapped key to where it belongs (the topic and
// key id), so a wrapped key moved to another topic does not open.
type KeyProvider interface {
	// ID names the key that wraps, recorded beside each wrapped key so a
	// wrong master key is told apart from a damaged wrapped key.
	ID() string
	Wrap(dataKey, context []byte) ([]byte, error)
	Unwrap(wrapped, context []byte) ([]byte, error)
}

// MasterKey is a KeyProvider over a local 32-byte key.
type MasterKey struct {
	id   string
	aead cipher.AEAD
}

// NewMasterKey returns the provider of key, which must be KeySize bytes.
func NewMasterKey(key []byte) (*MasterKey, error) {
	if len(key) != KeySize {
		return nil, ErrBadMasterKey
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("ratatoskr master key id v1"))
	return &MasterKey{id: hex.EncodeToString(m.Sum(nil)[:8]), aead: aead}, nil
}

// ParseMasterKey reads a master key in the key file format: 64 hex digits,
// optionally followed by a newline, or exactly 32 raw bytes.
func ParseMasterKey(b []byte) (*MasterKey, error) {
	if s := strings.TrimRight(string(b), "\r\n"); len(s) == 2*KeySize {
		if key, err := hex.DecodeString(s); err == nil {
			return NewMasterKey(key)
		}
	}
	if len(b) == KeySize {
		return NewMasterKey(b)
	}
	return nil, ErrBadMasterKey
}

// LoadMasterKeyFile reads a master key file (see ParseMasterKey). A file
// readable by group or others is refused: the key opens every topic.
func LoadMasterKeyFile(path string) (*MasterKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("crypt: master key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("crypt: master key file %s has mode %v: make it readable by its owner only (chmod 600)",
			path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("crypt: master key file: %w", err)
	}
	k, err := ParseMasterKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}

// GenerateMasterKeyFile writes a new random master key, as 64 hex digits
// and a newline, to path, which must not exist, with mode 0600.
func GenerateMasterKeyFile(path string) (*MasterKey, error) {
	key := make([]byte, KeySize)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	return NewMasterKey(key)
}

// ID implements KeyProvider: 16 hex digits of an HMAC of the key, which
// tells keys apart and reveals nothing of them.
func (k *MasterKey) ID() string { return k.id }

// Wrap implements KeyProvider: nonce (12 random bytes) || AES-256-GCM of
// the data key, with context as associated data.
func (k *MasterKey) Wrap(dataKey, context []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(dataKey)+k.aead.Overhead())
	_, _ = rand.Read(nonce)
	return k.aead.Seal(nonce, nonce, dataKey, context), nil
}

// Unwrap implements KeyProvider.
func (k *MasterKey) Unwrap(wrapped, context []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(wrapped) != ns+KeySize+k.aead.Overhead() {
		return nil, ErrUnwrap
	}
	key, err := k.aead.Open(nil, wrapped[:ns], wrapped[ns:], context)
	if err != nil {
		return nil, ErrUnwrap
	}
	return key, nil
}

// NewDataKey returns a new random data key.
func NewDataKey() []byte {
	key := make([]byte, KeySize)
	_, _ = rand.Read(key)
	return key
}

// WrapContext is the associated data a topic's data key is wrapped with:
// the topic and the key id, so a wrapped key opens only where it was put.
func WrapContext(topic string, id uint32) []byte {
	return fmt.Appendf(nil, "ratatoskr data key v1\x00%s\x00%d", topic, id)
}

// Keyring is a topic's data keys by id, and the id new batches are
// sealed with. Reads look keys up from any goroutine; rotation adds a key
// and makes it current.
type Keyring struct {
	mu      sync.Mutex
	keys    atomic.Pointer[map[uint32][]byte] // replaced, never modified
	current atomic.Uint32
}

// NewKeyring returns an empty keyring.
func NewKeyring() *Keyring {
	kr := &Keyring{}
	m := map[uint32][]byte{}
	kr.keys.Store(&m)
	return kr
}

// Add adds data key id (KeySize bytes); current makes new batches use it.
func (kr *Keyring) Add(id uint32, key []byte, current bool) error {
	if len(key) != KeySize {
		return fmt.Errorf("crypt: data key %d has %d bytes, want %d", id, len(key), KeySize)
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	m := make(map[uint32][]byte, len(*kr.keys.Load())+1)
	for k, v := range *kr.keys.Load() {
		m[k] = v
	}
	m[id] = append([]byte(nil), key...)
	kr.keys.Store(&m)
	if current {
		kr.current.Store(id)
	}
	return nil
}

// Current returns the id and key new batches are sealed with; ok is false
// for an empty keyring.
func (kr *Keyring) Current() (id uint32, key []byte, ok bool) {
	id = kr.current.Load()
	key, ok = (*kr.keys.Load())[id]
	return id, key, ok
}

// Key returns data key id.
func (kr *Keyring) Key(id uint32) ([]byte, bool) {
	key, ok := (*kr.keys.Load())[id]
	return key, ok
}

// IDs returns the ids of the keys held, in no order.
func (kr *Keyring) IDs() []uint32 {
	keys := *kr.keys.Load()
	ids := make([]uint32, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	return ids
}

// SaltSize is the size of a writer run's salt.
const SaltSize = 16

// RunAEAD returns the AES-256-GCM of the writer run that chose salt,
// under data key: its key is HMAC-SHA256(data key, label || salt). Each
// run (a segment, as one process writes it) gets a fresh random salt and
// so a key of its own, under which counter nonces never repeat; no
// nonce is ever chosen at random under a long-lived key.
func RunAEAD(dataKey []byte, salt []byte) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, dataKey)
	m.Write([]byte("ratatoskr segment run key v1"))
	m.Write(salt)
	return newGCM(m.Sum(nil))
}

// NewSalt returns a random salt for a writer run.
func NewSalt() (s [SaltSize]byte) {
	_, _ = rand.Read(s[:])
	return s
}

// Nonce is the GCM nonce of a run's n-th seal: 4 zero bytes and n.
func Nonce(dst *[12]byte, n uint64) []byte {
	binary.BigEndian.PutUint32(dst[:4], 0)
	binary.BigEndian.PutUint64(dst[4:], n)
	return dst[:]
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
