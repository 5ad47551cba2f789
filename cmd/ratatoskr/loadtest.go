package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ratatoskr-mq/ratatoskr/loadtest"
)

type loadtestCmd struct {
	serverFlag
	compressionFlag
	Protocol          string        `default:"native" enum:"native,grpc,http,ws" help:"How producers and subscribers talk to the broker: native, or a gateway's grpc, http or ws, with --server that gateway's address (--grpc-addr; the HTTP listener for http and ws)."`
	Topic             string        `default:"loadtest" help:"Topic to use; created if missing."`
	Partitions        int           `default:"0" help:"Partitions of the topic; 0 takes an existing topic's count, or 1 for a new one."`
	Producers         int           `default:"1" help:"Producer connections; producer i publishes to partition i mod partitions."`
	Subscribers       int           `default:"1" help:"Subscriber connections; each receives every message."`
	Size              loadtestSize  `default:"128B" help:"Payload size (at least 20B), such as 128B or 4KiB."`
	Rate              int           `default:"0" help:"Messages per second over all producers; 0 publishes as fast as possible."`
	Duration          time.Duration `default:"10s" help:"Run length, when --count is 0."`
	Count             int           `default:"0" help:"Messages over all producers; 0 runs for --duration."`
	BatchBytes        loadtestSize  `default:"256KiB" help:"Producer batch size bound."`
	Linger            time.Duration `default:"0s" help:"Producer linger (0: send whenever the connection is idle)."`
	Idempotence       bool          `negatable:"" help:"Make the producers idempotent (a producer id, batches numbered per partition); off by default, as in the client."`
	MessagesPerCall   int           `default:"64" help:"Messages an unpaced producer hands the client per call (PublishBatchAsync); 1 calls PublishAsync for each."`
	Drain             time.Duration `default:"10s" help:"Longest wait for deliveries after publishing ends."`
	BurstInterval     time.Duration `default:"1ms" help:"With --rate: send each interval's share of the rate as one burst at its start, latency counted from there; 0 spaces messages evenly, each counted from its own time."`
	PaceQuantum       time.Duration `default:"20us" help:"Shortest sleep of a paced producer; messages due meanwhile go out as one burst."`
	GoroutineDispatch bool          `help:"Run handlers on the subscription's goroutine instead of inline on the reader."`
	BrokerPID         int           `name:"broker-pid" help:"Broker process to sample for CPU use."`
	HistFile          string        `name:"hist-file" help:"Write the latency distribution here (HdrHistogram percentile format)."`
	LatencyLog        string        `name:"latency-log" help:"Write each message's intended send time and latency (ns, tab-separated) here, as the first subscriber received them."`
	JSON              bool          `name:"json" help:"Print the result as one JSON object on the last line of standard output."`
	Durable           bool          `help:"Use a durable (disk) topic; without it the topic is in memory."`
	Storage           string        `enum:",disk,memory,redis" default:"" help:"The topic's storage: disk (as --durable), memory, or redis (the broker's --redis-url); default: --durable decides."`
	Fsync             string        `help:"Fsync policy of the --durable topic: always (the default), interval=DURATION or never."`
	Recreate          bool          `help:"Delete and recreate an existing topic whose storage, fsync or partitions differ from what the flags ask; without it such a topic is refused. An existing topic is used as it is when none of --durable, --fsync and --partitions is given."`
	Replay            bool          `help:"Publish first, then have the subscribers read it all back, from this run's first message."`
	Group             string        `help:"Make the subscribers members of this consumer group, sharing the partitions."`
	Ack               string        `default:"offset" enum:"none,offset,message" help:"Ack mode of the --group: none, offset or message."`
	Payload           string        `default:"letters" enum:"letters,json" help:"Payload filler after the 20-byte header: letters (the same in every message) or json (varied log lines, for measuring --compression)."`
}

// Run prints progress to stderr, then the summary (or JSON) to stdout. A
// run that lost, duplicated or reordered messages exits non-zero after
// printing its figures.
func (c *loadtestCmd) Run(ctx context.Context) error {
	cfg := loadtest.Config{
		Server: c.addrs(), Protocol: c.Protocol, Topic: c.Topic, Partitions: c.Partitions, Producers: c.Producers,
		Subscribers: c.Subscribers, Size: int(c.Size), Rate: c.Rate, Duration: c.Duration, Count: c.Count,
		BatchBytes: int(c.BatchBytes), Linger: c.Linger, Idempotence: c.Idempotence, PerCall: c.MessagesPerCall, Drain: c.Drain, BrokerPID: c.BrokerPID, HistFile: c.HistFile,
		LatencyLog:    c.LatencyLog,
		BurstInterval: c.BurstInterval, PaceQuantum: c.PaceQuantum, GoroutineDispatch: c.GoroutineDispatch,
		Durable: c.Durable, Storage: c.Storage, Fsync: c.Fsync, Recreate: c.Recreate, Replay: c.Replay, Group: c.Group, Ack: c.Ack,
	}
	cfg.Compression, cfg.Payload = c.codec(), c.Payload
	tlsCfg, err := c.config()
	if err != nil {
		return err
	}
	cfg.TLS = tlsCfg
	if _, err := c.credFlags.options(); err != nil {
		return err
	}
	cfg.User, cfg.Password, cfg.Token = c.User, c.Password, c.Token
	res, err := loadtest.Run(ctx, cfg, os.Stderr)
	if res != nil {
		var werr error
		if c.JSON {
			werr = loadtest.WriteJSON(os.Stdout, res)
		} else {
			werr = loadtest.WriteSummary(os.Stdout, res)
		}
		if err == nil {
			err = werr
		}
	}
	return err
}

// loadtestSize is a payload or batch size: a byteSize (units.go) of at
// most 2GiB and not negative.
type loadtestSize int

// parseLoadtestSize reads a size such as 128B, 4KiB or 1.5MiB.
func parseLoadtestSize(s string) (loadtestSize, error) {
	v, err := parseSize(s)
	if err != nil || v < 0 || v > math.MaxInt32 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, such as 128B, 4KiB or 1MiB (at most 2GiB)", s)
	}
	return loadtestSize(v), nil
}

// Decode implements kong.MapperValue.
func (z *loadtestSize) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("size", &s); err != nil {
		return err
	}
	v, err := parseLoadtestSize(s)
	if err != nil {
		return err
	}
	*z = v
	return nil
}
