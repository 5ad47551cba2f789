package crypt

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMasterKeyFileFormats(t *testing.T) {
	key := NewDataKey()
	want, err := NewMasterKey(key)
	require.NoError(t, err)
	for name, in := range map[string][]byte{
		"hex":            []byte(hex.EncodeToString(key)),
		"hex newline":    []byte(hex.EncodeToString(key) + "\n"),
		"hex CRLF":       []byte(hex.EncodeToString(key) + "\r\n"),
		"raw":            key,
		"upper-case hex": bytes.ToUpper([]byte(hex.EncodeToString(key))),
	} {
		k, err := ParseMasterKey(in)
		require.NoError(t, err, name)
		require.Equal(t, want.ID(), k.ID(), name)
	}
	for name, in := range map[string][]byte{
		"empty":     nil,
		"short hex": []byte(hex.EncodeToString(key[:31])),
		"long raw":  append(append([]byte{}, key...), 0),
		"not hex":   bytes.Repeat([]byte("zz"), 32),
		"spaces":    []byte(" " + hex.EncodeToString(key)),
	} {
		_, err := ParseMasterKey(in)
		require.ErrorIs(t, err, ErrBadMasterKey, name)
	}
}

func TestGenerateAndLoadMasterKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	k, err := GenerateMasterKeyFile(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	loaded, err := LoadMasterKeyFile(path)
	require.NoError(t, err)
	require.Equal(t, k.ID(), loaded.ID())

	_, err = GenerateMasterKeyFile(path)
	require.ErrorIs(t, err, os.ErrExist, "an existing key is never overwritten")

	require.NoError(t, os.Chmod(path, 0o644))
	_, err = LoadMasterKeyFile(path)
	require.ErrorContains(t, err, "chmod 600")

	bad := filepath.Join(t.TempDir(), "bad.key")
	require.NoError(t, os.WriteFile(bad, []byte("not a key\n"), 0o600))
	_, err = LoadMasterKeyFile(bad)
	require.ErrorIs(t, err, ErrBadMasterKey)
	_, err = LoadMasterKeyFile(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestWrapIsBoundToKeyAndContext(t *testing.T) {
	mk, err := NewMasterKey(NewDataKey())
	require.NoError(t, err)
	other, err := NewMasterKey(NewDataKey())
	require.NoError(t, err)
	require.NotEqual(t, mk.ID(), other.ID())
	dk := NewDataKey()
	w, err := mk.Wrap(dk, WrapContext("t", 1))
	require.NoError(t, err)
	require.False(t, bytes.Contains(w, dk))
	got, err := mk.Unwrap(w, WrapContext("t", 1))
	require.NoError(t, err)
	require.Equal(t, dk, got)

	_, err = other.Unwrap(w, WrapContext("t", 1))
	require.ErrorIs(t, err, ErrUnwrap, "another master key")
	_, err = mk.Unwrap(w, WrapContext("u", 1))
	require.ErrorIs(t, err, ErrUnwrap, "another topic")
	_, err = mk.Unwrap(w, WrapContext("t", 2))
	require.ErrorIs(t, err, ErrUnwrap, "another key id")
	for i := range w {
		bad := bytes.Clone(w)
		bad[i] ^= 0x80
		_, err := mk.Unwrap(bad, WrapContext("t", 1))
		require.ErrorIs(t, err, ErrUnwrap, "byte %d altered", i)
	}
	_, err = mk.Unwrap(w[:len(w)-1], WrapContext("t", 1))
	require.ErrorIs(t, err, ErrUnwrap)
}

func TestKeyringRotation(t *testing.T) {
	kr := NewKeyring()
	_, _, ok := kr.Current()
	require.False(t, ok)
	k1, k2 := NewDataKey(), NewDataKey()
	require.NoError(t, kr.Add(1, k1, true))
	require.NoError(t, kr.Add(2, k2, true))
	id, key, ok := kr.Current()
	require.True(t, ok)
	require.Equal(t, uint32(2), id)
	require.Equal(t, k2, key)
	got, ok := kr.Key(1)
	require.True(t, ok)
	require.Equal(t, k1, got)
	require.Error(t, kr.Add(3, k1[:16], true), "a data key is 32 bytes")
	require.ElementsMatch(t, []uint32{1, 2}, kr.IDs())
}
