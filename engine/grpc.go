package engine

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/gateway/grpcgw"
)

// The gRPC front end (gateway/grpcgw) serves on Config.GRPCAddr from the
// moment the native listener serves (its sessions are in-process native
// sessions) until Shutdown begins, which stops it before the gateway's
// sessions close.

// grpcFront is the running gRPC server; nil without GRPCAddr.
type grpcFront struct {
	srv  *grpcgw.Server
	lis  net.Listener
	done chan struct{} // closed when Serve returned
}

// startGRPC listens on GRPCAddr and serves; TLS when the broker has a
// certificate, with the native TLS listener's settings (mutual TLS when
// TLSClientCAFile is set).
func (e *Engine) startGRPC() error {
	if e.cfg.GRPCAddr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", e.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("engine: gRPC listen %s: %w", e.cfg.GRPCAddr, err)
	}
	cfg := grpcgw.Config{Gateway: e.gw, Logger: e.log.With("via", "grpc"),
		MaxRecvBytes: max(grpcgw.DefaultMaxRecvBytes, e.cfg.MaxMessageBytes+1<<20),
		StallTimeout: e.cfg.SlowConsumerTimeout}
	if e.certs != nil {
		cfg.TLS = e.certs.Native()
	}
	f := &grpcFront{srv: grpcgw.New(cfg), lis: lis, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		if err := f.srv.Serve(lis); err != nil {
			e.log.Error("gRPC server", "err", err)
		}
	}()
	e.grpc = f
	e.log.Info("ratatoskr gRPC listening", "grpc_addr", lis.Addr().String(), "tls", cfg.TLS != nil,
		"mutual_tls", e.certs != nil && e.certs.MutualTLS())
	return nil
}

// grpcGrace bounds the gRPC server's graceful stop, so that a long call
// (a Fetch's long poll, a health Watch) does not use up the time Shutdown
// has for the rest.
const grpcGrace = 2 * time.Second

// stopGRPC stops the gRPC server: its streams end, unary calls in
// progress get until ctx ends or grpcGrace passes.
func (e *Engine) stopGRPC(ctx context.Context) {
	if e.grpc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, grpcGrace)
	defer cancel()
	e.grpc.srv.Stop(ctx)
	<-e.grpc.done
}

// GRPCAddr is the gRPC front end's address, or "" when it is off.
func (e *Engine) GRPCAddr() string {
	if e.grpc == nil {
		return ""
	}
	return e.grpc.lis.Addr().String()
}
