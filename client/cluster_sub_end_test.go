package client

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestUnsubscribeCrossingTheEndNotice: a node that ends a cluster
// subscription's node subscription itself (wire.FlagEndNotice) while the
// client unsubscribes it answers the Unsubscribe NOT_SUBSCRIBED, and its
// end notice comes before that answer or after it. Neither is an error:
// the ClusterSubscription's Unsubscribe used to return the NOT_SUBSCRIBED,
// and the notice, the subscription forgotten once the Unsubscribe was
// sent, went to the error handler.
func TestUnsubscribeCrossingTheEndNotice(t *testing.T) {
	for _, noticeFirst := range []bool{true, false} {
		t.Run("notice first "+strconv.FormatBool(noticeFirst), func(t *testing.T) {
			addr := endingNode(t, noticeFirst)
			var mu sync.Mutex
			var reported []error
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := Dial(ctx, addr, WithErrorHandler(func(err error) {
				mu.Lock()
				reported = append(reported, err)
				mu.Unlock()
			}))
			require.NoError(t, err)
			defer func() { _ = c.Close() }()

			ns := c.newSubscription("t", []SubscribeOption{FromPartition(0), StartAt(Earliest)})
			ns.handler = func(*Delivery) {}
			_, err = c.subscribeNode(ctx, ns, 0, false)
			require.NoError(t, err)
			s := &ClusterSubscription{cl: &Cluster{opts: c.opts}}
			s.unsubscribeNode(ns)
			require.Nil(t, s.unsubErr.Load(), "the node had let go of it")
			// A notice that comes after the Unsubscribe's answer comes
			// before the Pong.
			_, err = c.Ping(ctx)
			require.NoError(t, err)
			<-ns.Done()
			c.pmu.Lock()
			require.Empty(t, c.subEnds, "the end notice is forgotten once it came")
			c.pmu.Unlock()
			mu.Lock()
			defer mu.Unlock()
			require.Empty(t, reported)
		})
	}
}

// endingNode is a node of one connection that answers a Subscribe, and
// ends that subscription itself as an Unsubscribe of it comes in: it
// sends the end notice (NOT_LEADER under the Subscribe's corr) and
// answers the Unsubscribe NOT_SUBSCRIBED, in the order noticeFirst says.
func endingNode(t *testing.T, noticeFirst bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		send := func(frame []byte) { _, _ = conn.Write(frame) }
		errFrame := func(corr uint32, code wire.Code, msg string) []byte {
			b := wire.AppendError(nil, code, msg)
			return append(wire.AppendHeader(nil, wire.TypeError, 0, corr, len(b)), b...)
		}
		r := bufio.NewReader(conn)
		var hdr [wire.HeaderSize]byte
		var subCorr uint32
		for {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			h, err := wire.ParseHeader(hdr[:], 1<<30)
			if err != nil {
				return
			}
			if _, err := io.ReadFull(r, make([]byte, h.Length-wire.HeaderSize)); err != nil {
				return
			}
			switch h.Type {
			case wire.TypeHello:
				ok := wire.HelloOK{Version: wire.Version, MaxFrameBytes: wire.DefaultMaxFrameBytes,
					MaxMessageBytes: wire.DefaultMaxMessageBytes, ServerName: "ending", RunID: 1}
				b := ok.Append(nil)
				send(append(wire.AppendHeader(nil, wire.TypeHelloOK, 0, h.Corr, len(b)), b...))
			case wire.TypeSubscribe:
				subCorr = h.Corr
				b := (&wire.SubscribeOK{Partitions: 1, Starts: []wire.PartitionStart{{Partition: 0, Offset: 0}}}).Append(nil, wire.Version)
				send(append(wire.AppendHeader(nil, wire.TypeSubscribeOK, 0, h.Corr, len(b)), b...))
			case wire.TypeUnsubscribe:
				notice := errFrame(subCorr, wire.CodeNotLeader, "no leader: partition 0 of t")
				answer := errFrame(h.Corr, wire.CodeNotSubscribed, `no subscription to "t"`)
				if noticeFirst {
					send(notice)
					send(answer)
				} else {
					send(answer)
					send(notice)
				}
			case wire.TypePing:
				send(wire.AppendHeader(nil, wire.TypePong, 0, h.Corr, 0))
			}
		}
	}()
	return ln.Addr().String()
}
