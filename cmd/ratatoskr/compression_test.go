package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestPubCompression: `pub --compression` stores the lines compressed,
// `sub` prints them as they were, and an unknown codec is a usage error.
func TestPubCompression(t *testing.T) {
	s := startServer(t, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	const lines = 5000
	var in strings.Builder
	for i := range lines {
		fmt.Fprintf(&in, `{"seq":%d,"level":"info","service":"checkout","msg":"order %d created"}`+"\n", i, i*7)
	}
	for _, codec := range []string{"none", "lz4", "zstd", "snappy"} {
		topic := "cli-" + codec
		_, errOut, code := runCLI(t, strings.NewReader(in.String()), "pub", topic, "--compression", codec, "--server", s.addr)
		require.Equal(t, 0, code, errOut)
		out, errOut, code := runCLI(t, nil, "sub", topic, "--from", "earliest", "-n", fmt.Sprint(lines), "--server", s.addr)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, in.String(), out, "%s: sub prints what pub read", codec)

		c, err := client.Dial(context.Background(), s.addr)
		require.NoError(t, err)
		info, err := c.DescribeTopic(context.Background(), topic)
		_ = c.Close()
		require.NoError(t, err)
		stored := info.Partitions[0].Bytes
		t.Logf("%s: %d bytes of lines stored in %d", codec, in.Len(), stored)
		if codec == "none" {
			require.Greater(t, stored, int64(in.Len()))
		} else {
			require.Less(t, stored, int64(in.Len()/2), "%s: stored compressed", codec)
		}
	}
	_, errOut, code := runCLI(t, nil, "pub", "t", "x", "--compression", "gzip", "--server", s.addr)
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "--compression must be one of")
}
