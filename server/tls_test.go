package server

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// The inbound buffer hands out what was read in order, across compaction
// and growth, and lets a large buffer go once it is empty.
func TestTLSInboundCompactsAndGrows(t *testing.T) {
	var in tlsInbound
	var want, got bytes.Buffer
	fill := func(n int) {
		sp := in.space(minReadSpace)
		require.GreaterOrEqual(t, len(sp), minReadSpace)
		for i := range n {
			sp[i] = byte(want.Len() + i)
		}
		want.Write(sp[:n])
		in.w += n
	}
	for range readBufferCap/minReadSpace + 1 {
		fill(minReadSpace) // grows past the pooled size: nothing was taken
	}
	require.Equal(t, readBufferCap+minReadSpace, in.InboundBuffered())
	b, err := in.Peek(10)
	require.NoError(t, err)
	require.Equal(t, want.Bytes()[:10], b)
	_, err = in.Peek(readBufferCap + 2*minReadSpace)
	require.ErrorIs(t, err, io.ErrShortBuffer)
	p := make([]byte, minReadSpace+100)
	n, _ := in.Read(p)
	got.Write(p[:n])
	fill(minReadSpace) // compacts or grows, keeping the unread bytes
	n, _ = in.Discard(7)
	got.Write(want.Bytes()[got.Len() : got.Len()+n])
	for in.InboundBuffered() > 0 {
		n, _ := in.Read(p)
		got.Write(p[:n])
	}
	require.Equal(t, want.Bytes(), got.Bytes())
	for in.InboundBuffered() <= readBufferCap {
		fill(minReadSpace)
	}
	require.Greater(t, len(in.buf), readBufferCap)
	_, _ = in.Discard(in.InboundBuffered())
	in.space(minReadSpace)
	require.Equal(t, readBufferCap, len(in.buf), "an empty grown buffer is let go for a pooled one")
	in.release()
	require.Nil(t, in.buf)
}

func TestTLSIdentityString(t *testing.T) {
	id := TLSIdentity{CommonName: "svc", URIs: []string{"spiffe://x/y"}, DNSNames: []string{"a.example"}}
	require.Equal(t, "CN=svc,URI=spiffe://x/y,DNS=a.example", id.String())
	_, ok := identityOf(nil)
	require.False(t, ok)
}
