package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKeyGenerateAndServeMasterKey: `key generate` writes a 0600 key file
// and never overwrites one; serve refuses a bad key file, a key in both
// places, and --encrypt-at-rest without a key, each with a message that
// says what to fix, before it opens anything.
func TestKeyGenerateAndServeMasterKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	out, errOut, code := runCLI(t, nil, "key", "generate", path)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "wrote master key")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, strings.TrimSpace(string(b)), 64)

	_, errOut, code = runCLI(t, nil, "key", "generate", path)
	require.NotZero(t, code)
	require.Contains(t, errOut, "exists")

	bad := filepath.Join(dir, "bad.key")
	require.NoError(t, os.WriteFile(bad, []byte("0123\n"), 0o600))
	data := t.TempDir()
	_, errOut, code = runCLI(t, nil, "serve", "--data", data, "--master-key-file", bad)
	require.NotZero(t, code)
	require.Contains(t, errOut, "64 hex digits")

	_, errOut, code = runCLIEnv(t, []string{"RATATOSKR_MASTER_KEY=" + strings.TrimSpace(string(b))},
		"serve", "--data", data, "--master-key-file", path)
	require.NotZero(t, code)
	require.Contains(t, errOut, "give one")

	_, errOut, code = runCLI(t, nil, "serve", "--data", data, "--encrypt-at-rest", "on")
	require.NotZero(t, code)
	require.Contains(t, errOut, "MasterKey")
}
