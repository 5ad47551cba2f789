// Command ratatoskr is the Ratatoskr broker and its command-line tools in
// one binary: `serve` runs a broker; `topic`, `pub`, `sub` and `group` talk
// to one; `loadtest` measures one.
//
// Every setting can come from a flag or a RATATOSKR_* environment variable;
// a flag wins over the environment, which wins over the default.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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

	DashboardURL dashboardURLCmd `cmd:"" name:"dashboard-url" help:"Print the dashboard's address with the admin token, which the broker does not log."`
	Version      versionCmd      `cmd:"" help:"Print the version, commit, Go and protocol versions."`

	ShowVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`
}

// serverFlag is the address flag every client command shares.
type serverFlag struct {
	Server  string        `default:"127.0.0.1:7070" env:"RATATOSKR_SERVER" help:"Broker address, host:port."`
	Timeout time.Duration `default:"10s" env:"RATATOSKR_TIMEOUT" help:"Time limit for connecting and for each request."`
}

func (s serverFlag) dial(ctx context.Context, opts ...client.Option) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	return client.Dial(ctx, s.Server, append([]client.Option{client.WithName("ratatoskr-cli")}, opts...)...)
}

func main() {
	var c cli
	k := kong.Parse(&c,
		kong.Name("ratatoskr"),
		kong.Description("Ratatoskr: a fast message broker that never loses an acknowledged message."),
		kong.UsageOnError(),
		kong.Vars{"version": versionString()},
	)
	os.Exit(run(k))
}

// run executes the chosen command with a context cancelled by SIGINT or
// SIGTERM and returns the exit status.
func run(k *kong.Context) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	k.BindTo(ctx, (*context.Context)(nil))
	if err := k.Run(); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return 130
		}
		// The broker's own errors already say "ratatoskr:"; one is enough.
		fmt.Fprintln(os.Stderr, "ratatoskr:", strings.TrimPrefix(err.Error(), "ratatoskr: "))
		return 1
	}
	return 0
}
