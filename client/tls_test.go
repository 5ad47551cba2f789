package client_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
)

// tlsFront terminates TLS with cfg in front of the shared broker, as a
// load balancer would (the broker's own TLS listener is tested in
// package engine); it returns its address.
func tlsFront(t *testing.T, cfg *tls.Config) string {
	f, err := devcert.NewFront(cfg, brokerAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f.Addr()
}

// TestTLSClient: over TLS (and mutual TLS) the client publishes and
// subscribes as over plain TCP; a certificate of another CA, a missing
// client certificate, a plaintext client on the TLS port and a TLS client
// on the plaintext port each fail Dial with a clear error, not a hang.
func TestTLSClient(t *testing.T) {
	ctx := ctxT(t)
	b, err := devcert.Generate()
	require.NoError(t, err)
	serverCfg, err := b.ServerTLS(false)
	require.NoError(t, err)
	mutualCfg, err := b.ServerTLS(true)
	require.NoError(t, err)
	plainTLS, mutualTLS := tlsFront(t, serverCfg), tlsFront(t, mutualCfg)
	trusting, err := b.ClientTLS(false)
	require.NoError(t, err)
	withCert, err := b.ClientTLS(true)
	require.NoError(t, err)

	for name, tc := range map[string]struct {
		addr string
		cfg  *tls.Config
	}{"tls": {plainTLS, trusting}, "mutual": {mutualTLS, withCert}} {
		t.Run(name, func(t *testing.T) {
			c := dialT(t, tc.addr, client.WithTLS(tc.cfg))
			topic := "tls-" + name
			got := make(chan string, 1)
			_, err := c.Subscribe(ctx, topic, func(d *client.Delivery) { got <- string(d.Value) })
			require.NoError(t, err)
			_, err = c.Publish(ctx, topic, client.Message{Value: []byte("over " + name)})
			require.NoError(t, err)
			require.Equal(t, "over "+name, <-got)
		})
	}

	other, err := devcert.Generate()
	require.NoError(t, err)
	otherCfg, err := other.ClientTLS(true)
	require.NoError(t, err)
	refusals := map[string]struct {
		addr string
		opts []client.Option
		want string
	}{
		"another CA":          {plainTLS, []client.Option{client.WithTLS(otherCfg)}, "certificate signed by unknown authority"},
		"no client cert":      {mutualTLS, []client.Option{client.WithTLS(trusting)}, "certificate"},
		"plaintext on TLS":    {plainTLS, nil, "handshake"},
		"TLS on plaintext":    {brokerAddr, []client.Option{client.WithTLS(trusting)}, "may be plaintext"},
		"TLS on a talker":     {plaintextTalker(t), []client.Option{client.WithTLS(trusting)}, "may be plaintext"},
		"wrong name for cert": {plainTLS, []client.Option{client.WithTLS(&tls.Config{RootCAs: trusting.RootCAs, ServerName: "elsewhere.example"})}, "elsewhere.example"},
	}
	for name, r := range refusals {
		t.Run(name, func(t *testing.T) {
			_, err := client.Dial(ctx, r.addr, append(r.opts, client.WithoutReconnect())...)
			require.Error(t, err)
			t.Log(err)
			require.ErrorContains(t, err, r.want)
			require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "refused, not timed out")
			require.NotErrorIs(t, err, context.DeadlineExceeded, "refused, not timed out")
		})
	}
}

// plaintextTalker listens on a loopback port and answers every connection
// with a line of plaintext: to a TLS client, a record that does not look
// like TLS.
func plaintextTalker(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HELLO this port speaks plaintext\n"))
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}
