package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeBroker accepts one connection, answers its Hello with version v, and
// then every DescribeTopic with info encoded in version v's layout.
func fakeBroker(t *testing.T, v uint16, info wire.TopicInfo) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		var buf []byte
		chunk := make([]byte, 4096)
		for {
			f, n, err := wire.ReadFrame(buf, 1<<20)
			if err != nil {
				return
			}
			if n == 0 {
				m, err := conn.Read(chunk)
				if err != nil {
					return
				}
				buf = append(buf, chunk[:m]...)
				continue
			}
			var typ wire.Type
			var body []byte
			switch f.Type {
			case wire.TypeHello:
				ok := wire.HelloOK{Version: v, MaxFrameBytes: 1 << 20, MaxMessageBytes: 1 << 16, ServerName: "fake"}
				typ, body = wire.TypeHelloOK, ok.Append(nil)
			case wire.TypeDescribeTopic:
				typ, body = wire.TypeTopicInfo, info.Append(nil, v)
			default:
				return
			}
			if _, err := conn.Write(append(wire.AppendHeader(nil, typ, 0, f.Corr, len(body)), body...)); err != nil {
				return
			}
			buf = buf[n:]
		}
	}()
	return ln.Addr().String()
}

// TestClientDecodesByVersion: the client offers versions 1..3 and reads a
// TopicInfo in the layout of the version the broker picked; a version it
// does not speak is a protocol error.
func TestClientDecodesByVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info := wire.TopicInfo{Name: "t", Partitions: []wire.PartitionInfo{{ID: 0, EndOffset: 5, Segments: 1,
		State: wire.PartitionOffline, Reason: "open: input/output error"}}}

	c, err := client.Dial(ctx, fakeBroker(t, 1, info), client.WithoutIdempotence()) // the fake knows no InitProducer
	require.NoError(t, err)
	got, err := c.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, int64(5), got.Partitions[0].EndOffset)
	require.Equal(t, client.PartitionOnline, got.Partitions[0].State, "a version 1 broker reports no state")
	require.NoError(t, c.Close())

	c, err = client.Dial(ctx, fakeBroker(t, 2, info), client.WithoutIdempotence())
	require.NoError(t, err)
	got, err = c.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOffline, got.Partitions[0].State)
	require.Equal(t, "open: input/output error", got.Partitions[0].Reason)
	require.NoError(t, c.Close())

	c, err = client.Dial(ctx, fakeBroker(t, 3, info), client.WithoutIdempotence())
	require.NoError(t, err)
	got, err = c.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOffline, got.Partitions[0].State)
	require.NoError(t, c.Close())

	_, err = client.Dial(ctx, fakeBroker(t, wire.Version+1, info))
	require.ErrorIs(t, err, client.ErrProtocol)
}
