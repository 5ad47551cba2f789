// Command ratatoskr is the Ratatoskr broker and its command-line tools in
// one binary: `serve` runs a broker; `topic`, `pub`, `sub` and `group` talk
// to one; `loadtest` measures one.
//
// Every setting can come from a flag or a RATATOSKR_* environment variable;
// a flag wins over the environment, which wins over the default.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// cli is the command tree. kong builds flags, environment lookups and help
// from these struct tags.
type cli struct {
	Serve    serveCmd    `cmd:"" help:"Run a broker."`
	Topic    topicCmd    `cmd:"" help:"Create, list, describe and delete topics."`
	Pub      pubCmd      `cmd:"" help:"Publish the arguments, or each line of standard input."`
	Sub      subCmd      `cmd:"" help:"Print each message published to a topic from now on, or consume as a member of a group (--group)."`
	Group    groupCmd    `cmd:"" help:"List, describe and reset consumer groups."`
	Loadtest loadtestCmd `cmd:"" help:"Measure a broker's throughput and latency: rates, end-to-end latency, loss."`
	User     userCmd     `cmd:"" help:"Manage users: add, list, delete, passwd, disable, enable (through the HTTP API)."`
	ACL      aclCmd      `cmd:"" name:"acl" help:"Manage ACL rules: add, list, delete (through the HTTP API)."`
	Tenant   tenantCmd   `cmd:"" help:"Manage tenants and their quotas (through the HTTP API)."`
	Cluster  clusterCmd  `cmd:"" help:"A cluster's nodes, partitions and leaders: status, transfer-leader, rebalance (through the HTTP API)."`

	DashboardURL dashboardURLCmd `cmd:"" name:"dashboard-url" help:"Print the dashboard's address with the admin token, which the broker does not log."`
	Version      versionCmd      `cmd:"" help:"Print the version, commit, Go and protocol versions."`
	Cert         certCmd         `cmd:"" help:"Make certificates for trying TLS."`
	Key          keyCmd          `cmd:"" help:"Make a master key for encryption at rest."`
	Completion   completionCmd   `cmd:"" help:"${completion_help}"`
	Complete     completeCmd     `cmd:"" name:"__complete" hidden:"" passthrough:"" help:"Print the completions of a command line (used by the completion scripts)."`

	ShowVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`
}

// serverFlag is the address and TLS flags every client command shares.
type serverFlag struct {
	Server  []string `default:"127.0.0.1:7070" env:"RATATOSKR_SERVER" sep:"," placeholder:"HOST:PORT" help:"Broker address; several (comma-separated, or the flag repeated) are a cluster's nodes: pub, sub and loadtest then send each partition to the node that leads it, and the other commands try them in turn."`
	Timeout duration `default:"10s" env:"RATATOSKR_TIMEOUT" help:"Time limit for connecting and for each request."`
	tlsFlags
	credFlags
}

// credFlags are the credentials of a client command, for a broker with
// authentication on.
type credFlags struct {
	User     string `env:"RATATOSKR_USER" help:"Authenticate as this user (SCRAM-SHA-256), with --password."`
	Password string `env:"RATATOSKR_PASSWORD" secret:"" help:"The user's password; prefer the RATATOSKR_PASSWORD variable, which other users cannot read in the process list."`
	Token    string `env:"RATATOSKR_TOKEN" secret:"" help:"Authenticate with a bearer token: a JWT of the issuer the broker trusts, or the admin token."`
}

// options is the client option the flags ask for, if any.
func (f credFlags) options() ([]client.Option, error) {
	switch {
	case f.User != "" && f.Token != "":
		return nil, usageErrorf("--user and --token exclude each other")
	case f.User != "" && f.Password == "":
		return nil, usageErrorf("--user needs a password: --password or RATATOSKR_PASSWORD")
	case f.User == "" && f.Password != "":
		return nil, usageErrorf("--password needs --user")
	case f.User != "":
		return []client.Option{client.WithCredentials(f.User, f.Password)}, nil
	case f.Token != "":
		return []client.Option{client.WithToken(f.Token)}, nil
	}
	return nil, nil
}

// tlsFlags choose TLS for a client command.
type tlsFlags struct {
	TLS     bool   `name:"tls" env:"RATATOSKR_TLS" help:"Connect over TLS, trusting the system's certificate authorities (implied by --tls-ca)."`
	TLSCA   string `name:"tls-ca" env:"RATATOSKR_TLS_CA" type:"existingfile" help:"Connect over TLS, trusting the certificate authority in this PEM file (ratatoskr cert dev writes one)."`
	TLSCert string `name:"tls-cert" env:"RATATOSKR_TLS_CERT" type:"existingfile" help:"Client certificate (PEM) for a broker that requires one; with --tls-key."`
	TLSKey  string `name:"tls-key" env:"RATATOSKR_TLS_KEY" type:"existingfile" help:"The client certificate's private key (PEM)."`
}

// options is the client options the flags ask for: WithTLS, or none.
func (f tlsFlags) options() ([]client.Option, error) {
	cfg, err := f.config()
	if cfg == nil || err != nil {
		return nil, err
	}
	return []client.Option{client.WithTLS(cfg)}, nil
}

// config is the TLS configuration the flags ask for, or nil for none.
func (f tlsFlags) config() (*tls.Config, error) {
	if !f.TLS && f.TLSCA == "" && f.TLSCert == "" && f.TLSKey == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.TLSCA != "" {
		pem, err := os.ReadFile(f.TLSCA)
		if err != nil {
			return nil, usageErrorf("--tls-ca: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--tls-ca: no PEM certificate in %s", f.TLSCA)
		}
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return nil, usageErrorf("--tls-cert and --tls-key go together")
	}
	if f.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, usageErrorf("--tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// clientOptions are the TLS and credential options the flags ask for.
func (s serverFlag) clientOptions() ([]client.Option, error) {
	opts, err := s.tlsFlags.options()
	if err != nil {
		return nil, err
	}
	creds, err := s.credFlags.options()
	return append(opts, creds...), err
}

// addrs is the --server addresses as the client takes them: one string,
// comma-separated.
func (s serverFlag) addrs() string { return strings.Join(s.Server, ",") }

// cluster reports whether --server names several nodes: the commands that
// publish and subscribe then use a cluster client (client.Cluster).
func (s serverFlag) cluster() bool {
	n := 0
	for _, a := range s.Server {
		if strings.TrimSpace(a) != "" {
			n++
		}
	}
	return n > 1
}

// dial connects; after a lost connection the client dials again by
// itself, and says so on standard error.
func (s serverFlag) dial(ctx context.Context, opts ...client.Option) (*client.Client, error) {
	tlsOpts, err := s.clientOptions()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout.D())
	defer cancel()
	return client.Dial(ctx, s.addrs(), append(append([]client.Option{client.WithName("ratatoskr-cli"),
		client.WithStateHandler(reportState)}, tlsOpts...), opts...)...)
}

// dialCluster connects to a cluster through the first --server node that
// answers; the client says on standard error when it loses a node.
func (s serverFlag) dialCluster(ctx context.Context, opts ...client.Option) (*client.Cluster, error) {
	tlsOpts, err := s.clientOptions()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout.D())
	defer cancel()
	return client.DialCluster(ctx, s.addrs(), append(append([]client.Option{client.WithName("ratatoskr-cli"),
		client.WithStateHandler(reportNodeState)}, tlsOpts...), opts...)...)
}

// reportNodeState tells the user when a cluster client loses a node (its
// partitions go on at their next leaders).
func reportNodeState(st client.State, err error) {
	if st == client.StateDisconnected {
		fmt.Fprintf(os.Stderr, "ratatoskr: %s\n", strings.TrimPrefix(err.Error(), "ratatoskr: "))
	}
}

// reportState tells the user when the connection is lost and back.
func reportState(st client.State, err error) {
	switch st {
	case client.StateDisconnected:
		fmt.Fprintf(os.Stderr, "ratatoskr: %s; reconnecting\n", strings.TrimPrefix(err.Error(), "ratatoskr: "))
	case client.StateReconnected:
		fmt.Fprintln(os.Stderr, "ratatoskr: reconnected")
	}
}

// Exit statuses, the same for every command (and in --help).
const (
	exitOK          = 0   // the command did what it was asked
	exitFailed      = 1   // it ran and failed: the broker refused, a connection broke, a write failed
	exitUsage       = 2   // the command line was wrong: nothing was done
	exitInterrupted = 130 // SIGINT or SIGTERM stopped it
)

const description = `Ratatoskr: a fast message broker that never loses an acknowledged message.

Exit status: 0 success; 1 the command failed; 2 a usage error (nothing was done); 130 interrupted.`

func main() {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("ratatoskr"),
		kong.Description(description),
		kong.Vars{"version": versionString(), "format_help": formatHelp, "output_help": outputHelp,
			"completion_help": completionHelp},
	)
	if err != nil {
		panic(err) // the command tree itself is wrong: a bug, caught by every test
	}
	k, err := parser.Parse(os.Args[1:])
	if err != nil {
		os.Exit(usageError(os.Stderr, err))
	}
	os.Exit(run(k))
}

// usageError prints a command-line error first, in two lines: what was
// wrong (with kong's suggestion, if it has one) and where the help is.
func usageError(w io.Writer, err error) int {
	help := []string{"ratatoskr"}
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil {
		for _, p := range pe.Context.Path {
			if p.Command != nil { // the commands only: "topic create", not its arguments
				help = append(help, p.Command.Name)
			}
		}
	}
	_, _ = fmt.Fprintf(w, "ratatoskr: %v\nRun %q for usage.\n", err, strings.Join(append(help, "--help"), " "))
	return exitUsage
}

// flagError is a flag value found wrong once the command runs (a file
// that holds no certificate, say): a usage error, nothing was done.
type flagError struct{ msg string }

func (e *flagError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &flagError{msg: fmt.Sprintf(format, args...)}
}

// withContext wraps a failure with what was being done, dropping the
// "ratatoskr: " the client's errors start with so that the prefix is
// printed once, at the start of the line.
func withContext(err error, format string, args ...any) *contextError {
	return &contextError{msg: fmt.Sprintf(format, args...), err: err}
}

type contextError struct {
	msg  string
	err  error
	tail string // said after the error
}

func (e *contextError) Error() string {
	return e.msg + ": " + strings.TrimPrefix(e.err.Error(), "ratatoskr: ") + e.tail
}

func (e *contextError) Unwrap() error { return e.err }

// run executes the chosen command with a context cancelled by SIGINT or
// SIGTERM and returns the exit status.
func run(k *kong.Context) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	k.BindTo(ctx, (*context.Context)(nil))
	if err := k.Run(); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return exitInterrupted
		}
		// The broker's own errors already say "ratatoskr:"; one is enough.
		fmt.Fprintln(os.Stderr, "ratatoskr:", strings.TrimPrefix(err.Error(), "ratatoskr: "))
		var ue *flagError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailed
	}
	return exitOK
}
