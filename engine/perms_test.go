package engine

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestDataFilesAreOwnerOnly: what a broker writes under its data
// directory (segments, indexes, clean markers, the topics and offsets
// files, the admin token, the trash) has no group or other permission
// bits, and a data directory from an older version (0644 files, 0755
// directories) is tightened by the next start.
func TestDataFilesAreOwnerOnly(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "perm", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "perm", 0, 50)
	joinGroup(t, e, client.GroupConfig{Group: "g", Topic: "perm", Mode: client.AckOffset,
		Start: client.Earliest, AutoCommitInterval: 20 * time.Millisecond,
		Handler: func(*client.GroupMessage) error { return nil }})
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(ctx, "g")
		return err == nil && len(info.Partitions) == 2 && info.Partitions[0].Committed > 0 &&
			info.Partitions[1].Committed > 0
	}, 20*time.Second, 10*time.Millisecond, "the group committed")
	dir := e.cfg.DataDir
	require.NoError(t, e.Shutdown(context.Background()))

	names := ownerOnly(t, dir)
	for _, want := range []string{"topics.json", "admin.token", "trash", "topics/perm/0", "clean", ".log", ".index"} {
		require.True(t, containsSuffix(names, want), "%s was written (found %v)", want, names)
	}

	// An older version's data directory: loosen everything, restart.
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			return os.Chmod(p, 0o755)
		}
		return os.Chmod(p, 0o644)
	}))
	e2 := startBroker(t, func(c *Config) { c.DataDir = dir })
	require.NoError(t, e2.Shutdown(context.Background()))
	ownerOnly(t, dir)
}

// ownerOnly checks that nothing under dir has group or other permission
// bits, and returns what it found.
func ownerOnly(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		info, err := d.Info()
		require.NoError(t, err)
		require.Zero(t, info.Mode().Perm()&0o077, "%s has mode %v", p, info.Mode().Perm())
		names = append(names, filepath.ToSlash(p))
		return nil
	}))
	return names
}

func containsSuffix(names []string, suffix string) bool {
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}
