package main

import (
	"context"
	"os"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/loadtest"
)

type loadtestCmd struct {
	serverFlag
	Topic             string        `default:"loadtest" help:"Topic to use; created if missing."`
	Partitions        int           `default:"1" help:"Partitions of the topic when it is created."`
	Producers         int           `default:"1" help:"Producer connections; producer i publishes to partition i mod partitions."`
	Subscribers       int           `default:"1" help:"Subscriber connections; each receives every message."`
	Size              int           `default:"128" help:"Payload bytes (at least 20)."`
	Rate              int           `default:"0" help:"Messages per second over all producers; 0 publishes as fast as possible."`
	Duration          time.Duration `default:"10s" help:"Run length, when --count is 0."`
	Count             int           `default:"0" help:"Messages over all producers; 0 runs for --duration."`
	BatchBytes        int           `default:"262144" help:"Producer batch size bound."`
	Linger            time.Duration `default:"0s" help:"Producer linger (0: send whenever the connection is idle)."`
	Idempotence       bool          `default:"true" negatable:"" help:"Make the producers idempotent (a producer id, batches numbered per partition); the client's default."`
	Drain             time.Duration `default:"10s" help:"Longest wait for deliveries after publishing ends."`
	PaceQuantum       time.Duration `default:"20us" help:"Shortest sleep of a paced producer; messages due meanwhile go out as one burst."`
	GoroutineDispatch bool          `help:"Run handlers on the subscription's goroutine instead of inline on the reader."`
	BrokerPID         int           `name:"broker-pid" help:"Broker process to sample for CPU use."`
	HistFile          string        `name:"hist-file" help:"Write the latency distribution here (HdrHistogram percentile format)."`
	LatencyLog        string        `name:"latency-log" help:"Write each message's intended send time and latency (ns, tab-separated) here, as the first subscriber received them."`
	JSON              bool          `name:"json" help:"Print the result as one JSON object on the last line of standard output."`
	Durable           bool          `help:"Use a durable (disk) topic; without it the topic is in memory."`
	Fsync             string        `default:"always" help:"Fsync policy of a durable topic: always, interval=DURATION or never."`
	Replay            bool          `help:"Publish first, then have the subscribers read it all back from the earliest offset."`
	Group             string        `help:"Make the subscribers members of this consumer group, sharing the partitions."`
	Ack               string        `default:"offset" enum:"none,offset,message" help:"Ack mode of the --group: none, offset or message."`
}

// Run prints progress to stderr, then the summary (or JSON) to stdout. A
// run that lost, duplicated or reordered messages exits non-zero after
// printing its figures.
func (c *loadtestCmd) Run(ctx context.Context) error {
	cfg := loadtest.Config{
		Server: c.Server, Topic: c.Topic, Partitions: c.Partitions, Producers: c.Producers,
		Subscribers: c.Subscribers, Size: c.Size, Rate: c.Rate, Duration: c.Duration, Count: c.Count,
		BatchBytes: c.BatchBytes, Linger: c.Linger, Idempotence: c.Idempotence, Drain: c.Drain, BrokerPID: c.BrokerPID, HistFile: c.HistFile,
		LatencyLog:  c.LatencyLog,
		PaceQuantum: c.PaceQuantum, GoroutineDispatch: c.GoroutineDispatch,
		Durable: c.Durable, Fsync: c.Fsync, Replay: c.Replay, Group: c.Group, Ack: c.Ack,
	}
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
