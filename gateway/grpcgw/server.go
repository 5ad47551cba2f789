// Package grpcgw is the broker's gRPC front end: the ratatoskr.v1.Broker
// service (proto/ratatoskr/v1) over the protocol-neutral sessions of
// package gateway, with the standard health service and server reflection
// beside it (docs/GRPC.md).
//
// Every call runs in a gateway session under the caller's own
// credentials, so the broker applies its authentication, ACLs, quotas and
// flow control as for a native client:
//
//	authorization: Bearer <token>            -> Credentials.Token
//	authorization: Basic base64(user:pass)   -> Credentials.User, Password
//	a verified TLS client certificate        -> Credentials.Cert
//	the peer's address                       -> Credentials.Remote
//
// Unary calls share a session per set of credentials (Gateway.Acquire);
// Subscribe and PublishStream have a session of their own for the life of
// the stream (Gateway.Dedicated), so a client that stops reading is a slow
// consumer of its own session, cut by the broker like any other.
package grpcgw

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/ratatoskr-mq/ratatoskr/gateway"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// via is the front end's name in the gateway's metrics and the broker's
// connection list.
const via = "grpc"

// DefaultMaxRecvBytes bounds a request when Config.MaxRecvBytes is zero:
// the broker's default largest message (1 MiB) many times over, so a
// publish request of many records fits.
const DefaultMaxRecvBytes = 16 << 20

// Flow-control windows. gRPC's defaults (64 KiB, grown by its bandwidth
// estimate) keep a stream of large batches waiting for window updates on
// every few messages; fixed windows of this size let a stream carry a
// broker batch or more per round trip. They bound what one stream and one
// connection hold unread.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// socketBuffer is the size of a connection's read and write buffers: a
// publish request or a subscribe response of a busy stream is a few
// hundred KiB, which gRPC's default 32 KiB reads and writes take in many
// system calls.
const socketBuffer = 256 << 10

// Config configures a Server.
type Config struct {
	Gateway *gateway.Gateway
	// TLS serves over TLS; nil serves plaintext. A config that requires
	// and verifies client certificates (mutual TLS) makes a verified
	// certificate the caller's identity when it sends no other.
	TLS    *tls.Config
	Logger *slog.Logger
	// MaxRecvBytes bounds one request message; a larger one is refused
	// with ResourceExhausted. Default DefaultMaxRecvBytes.
	MaxRecvBytes int
	// StallTimeout ends a Subscribe stream whose client took nothing this
	// long while records waited for it, with ResourceExhausted (a slow
	// consumer). Default 5 s, the broker's default slow-consumer timeout.
	StallTimeout time.Duration
}

// Server serves the Broker service.
type Server struct {
	pb.UnimplementedBrokerServer

	g      *gateway.Gateway
	log    *slog.Logger
	srv    *grpc.Server
	health *health.Server
	stall  time.Duration

	mu       sync.Mutex
	lis      net.Listener
	stopOnce sync.Once
	// stopping is closed when Stop begins: streams end then, so that the
	// graceful stop has only unary calls to wait for.
	stopping chan struct{}
}

// New makes a server; Serve starts it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRecvBytes <= 0 {
		cfg.MaxRecvBytes = DefaultMaxRecvBytes
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 5 * time.Second
	}
	s := &Server{g: cfg.Gateway, log: cfg.Logger, health: health.NewServer(), stopping: make(chan struct{}),
		stall: cfg.StallTimeout}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvBytes),
		grpc.ForceServerCodecV2(pb.Codec{}),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		// Received messages land in buffers from pb.BufferPool, which
		// skips the clearing gRPC's default pool does (a tenth of a busy
		// stream's time); larger socket buffers mean fewer system calls
		// for streams of large messages.
		experimental.BufferPool(pb.BufferPool()),
		grpc.ReadBufferSize(socketBuffer),
		grpc.WriteBufferSize(socketBuffer),
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.stream),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.srv = grpc.NewServer(opts...)
	pb.RegisterBrokerServer(s.srv, s)
	healthpb.RegisterHealthServer(s.srv, s.health)
	reflection.Register(s.srv)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(pb.Broker_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// Serve accepts connections on lis until Stop; it returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	s.lis = lis
	s.mu.Unlock()
	err := s.srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Addr is the address Serve listens on; nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Stop marks the health service NOT_SERVING, ends the streams, and stops
// gracefully: unary calls in progress finish, until ctx ends; then the
// connections are closed.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		close(s.stopping)
	})
	done := make(chan struct{})
	go func() {
		s.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.srv.Stop()
		<-done
	}
}

// ours reports whether method is the Broker service's (not health or
// reflection, which take no credentials and are not counted).
func ours(method string) bool {
	return strings.HasPrefix(method, "/"+pb.Broker_ServiceDesc.ServiceName+"/")
}

// unary counts the Broker service's calls and turns their errors into
// gRPC statuses.
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if !ours(info.FullMethod) {
		return resp, err
	}
	s.g.Metrics().Request(via, countable(err))
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// stream is unary's counterpart for streams.
func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !ours(info.FullMethod) {
		return handler(srv, ss)
	}
	s.g.Metrics().Streams(via, 1)
	defer s.g.Metrics().Streams(via, -1)
	err := handler(srv, ss)
	s.g.Metrics().Request(via, countable(err))
	return toStatus(err)
}

// credentialsOf extracts what the caller presented.
func credentialsOf(ctx context.Context) (gateway.Credentials, error) {
	var cred gateway.Credentials
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			cred.Remote = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			cred.Cert = ti.State.VerifiedChains[0][0]
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return cred, nil
	}
	if len(vals) > 1 {
		return cred, wire.Errorf(wire.CodeAuthFailed, "more than one authorization header")
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	rest = strings.TrimSpace(rest)
	switch strings.ToLower(scheme) {
	case "bearer":
		if rest == "" {
			return cred, wire.Errorf(wire.CodeAuthFailed, "empty bearer token")
		}
		cred.Token = rest
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return cred, wire.Errorf(wire.CodeAuthFailed, "basic credentials are not base64")
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return cred, wire.Errorf(wire.CodeAuthFailed, "basic credentials are not user:password")
		}
		cred.User, cred.Password = user, pass
	default:
		return cred, wire.Errorf(wire.CodeAuthFailed, "authorization scheme "+scheme+" is not Bearer or Basic")
	}
	return cred, nil
}

// acquire returns the caller's shared session for a unary call.
func (s *Server) acquire(ctx context.Context) (*gateway.Session, func(), error) {
	cred, err := credentialsOf(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s.g.Acquire(ctx, via, cred)
}

// dedicated opens a session of the stream's own.
func (s *Server) dedicated(ctx context.Context) (*gateway.Session, error) {
	cred, err := credentialsOf(ctx)
	if err != nil {
		return nil, err
	}
	return s.g.Dedicated(ctx, via, cred)
}

// toStatus maps a session call's error to a gRPC status; a status (the
// transport's own) passes as it is.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var we *wire.Error
	if _, ok := status.FromError(err); ok && !errors.As(err, &we) {
		return err
	}
	return status.Error(Code(gateway.KindOf(err)), err.Error())
}

// Code is the gRPC code for a gateway.Kind.
func Code(k gateway.Kind) codes.Code {
	switch k {
	case gateway.KindInvalid:
		return codes.InvalidArgument
	case gateway.KindUnauthenticated:
		return codes.Unauthenticated
	case gateway.KindDenied:
		return codes.PermissionDenied
	case gateway.KindNotFound:
		return codes.NotFound
	case gateway.KindExists:
		return codes.AlreadyExists
	case gateway.KindTooLarge, gateway.KindExhausted:
		return codes.ResourceExhausted
	case gateway.KindRange:
		return codes.OutOfRange
	case gateway.KindUnavailable:
		return codes.Unavailable
	case gateway.KindConflict:
		return codes.FailedPrecondition
	case gateway.KindCanceled:
		return codes.Canceled
	case gateway.KindTimeout:
		return codes.DeadlineExceeded
	}
	return codes.Internal
}

// countable is err as the gateway's metrics classify it: a transport
// status of a client that went away counts as canceled, not internal.
func countable(err error) error {
	var we *wire.Error
	if err == nil || errors.As(err, &we) {
		return err
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Canceled:
			return context.Canceled
		case codes.DeadlineExceeded:
			return context.DeadlineExceeded
		}
	}
	return err
}

// invalid is a request that is wrong in itself.
func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }
