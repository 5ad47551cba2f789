package grpcgw_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// startBroker runs a broker with the gRPC front end on 127.0.0.1 port 0.
func startBroker(t *testing.T, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	var grpcOn bool
	e := brokertest.Start(t, func(cfg *engine.Config) {
		cfg.GRPCAddr, cfg.DefaultStorage = "127.0.0.1:0", "memory"
		if mutate != nil {
			mutate(cfg)
		}
		grpcOn = cfg.GRPCAddr != "" && cfg.GRPCAddr != "off"
	})
	if grpcOn {
		require.NotEmpty(t, e.GRPCAddr())
	}
	return e
}

// authHeader sends an authorization header with every call.
type authHeader string

func (a authHeader) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(a)}, nil
}

func (authHeader) RequireTransportSecurity() bool { return false }

// dial connects a client; tc nil is plaintext, auth "" sends no
// authorization header.
func dial(t *testing.T, addr string, tc *tls.Config, auth string, opts ...grpc.DialOption) (pb.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	opts = append(opts, grpc.WithTransportCredentials(creds))
	if auth != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(authHeader(auth)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return pb.NewBrokerClient(cc), cc
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want.String(), status.Code(err).String(), "%v", err)
}

func records(values ...string) []*pb.Record {
	out := make([]*pb.Record, len(values))
	for i, v := range values {
		out[i] = &pb.Record{Value: []byte(v)}
	}
	return out
}

func earliest() *pb.Position { return &pb.Position{Kind: &pb.Position_Earliest{Earliest: true}} }

func part(p int32) *int32 { return &p }
