package client

import (
	"context"
	"fmt"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// FetchOption adjusts a Fetch.
type FetchOption func(*wire.Fetch)

// MaxBytes bounds the size of one fetch's answer (at least one batch is
// returned when any is available). Default 1 MiB.
func MaxBytes(n int) FetchOption {
	return func(f *wire.Fetch) { f.MaxBytes = uint32(max(n, 1)) }
}

// MaxWait makes a fetch that finds nothing wait up to d for messages to
// arrive (a long poll). Default 0: answer at once. The broker cuts a longer
// wait to its own bound (--max-fetch-wait, 30 s by default), answering
// sooner with no messages.
func MaxWait(d time.Duration) FetchOption {
	return func(f *wire.Fetch) { f.MaxWaitMs = uint32(d.Milliseconds()) }
}

// Fetched is the answer to a Fetch.
type Fetched struct {
	// Messages in offset order, copies that the caller owns.
	Messages []Delivery
	// Next is the offset to fetch from next.
	Next int64
	// Start and End are the partition's first offset held and its end.
	Start, End int64
}

// Fetch pulls messages of one partition from a position: the pull side of
// the durable log, for consumers that keep their own offsets. It returns
// ErrOffsetOutOfRange when the offset is no longer (or not yet) held, and
// ErrLimitExceeded when this client already has the broker's maximum of
// fetches outstanding (--max-fetches-per-connection, 256 by default).
func (c *Client) Fetch(ctx context.Context, topic string, partition int, from Position, opts ...FetchOption) (Fetched, error) {
	req := wire.Fetch{Topic: topic, Partition: int32(partition), Start: from.wire(), MaxBytes: 1 << 20}
	for _, o := range opts {
		o(&req)
	}
	if err := wire.ValidateTopicName(topic); err != nil {
		return Fetched{}, err
	}
	r, err := c.call(ctx, wire.TypeFetch, 0, req.Append(nil))
	if err != nil {
		return Fetched{}, err
	}
	if err := expect(r, wire.TypeFetchResult); err != nil {
		return Fetched{}, err
	}
	hdr, batches, err := wire.DecodeFetchResult(r.body)
	if err != nil {
		return Fetched{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	out := Fetched{Next: hdr.Offset, Start: hdr.StartOffset, End: hdr.EndOffset}
	var dec wire.Decompressor
	for _, b := range batches {
		it, err := dec.Records(b, wire.MaxBatchBytes)
		if err != nil {
			return out, fmt.Errorf("%w: fetched batch: %w", ErrProtocol, err)
		}
		var rec wire.Record
		for it.Next(&rec) {
			if rec.Offset < hdr.Offset {
				continue
			}
			d := Delivery{Topic: topic, Partition: hdr.Partition, Offset: rec.Offset,
				Message: Message{Key: rec.Key, Value: rec.Value, Timestamp: time.Unix(0, rec.Timestamp)}}
			if rec.HeaderCount() > 0 {
				rec.Headers(func(k, v []byte) { d.Headers = append(d.Headers, Header{Key: string(k), Value: v}) })
			}
			out.Messages = append(out.Messages, d.Clone())
			out.Next = rec.Offset + 1
		}
		if it.Err() != nil {
			return out, fmt.Errorf("%w: fetched batch: %w", ErrProtocol, it.Err())
		}
	}
	return out, nil
}
