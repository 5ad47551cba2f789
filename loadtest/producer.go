package loadtest

import (
	"context"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// producer publishes one share of the run's messages to one partition, so
// that its sequence numbers must arrive in order.
type producer struct {
	id        uint32
	c         conn
	topic     string
	partition int
	count     int       // messages to send; 0 = until deadline
	rate      float64   // messages per second; 0 = unpaced
	quantum   int64     // shortest sleep between paced bursts, ns
	window    int64     // burst interval of the schedule, ns; 0 = evenly spaced
	deadline  time.Time // for duration runs
	size      int
	payload   string        // filler kind, see fillPayload
	perCall   int           // unpaced: messages per client call (Config.PerCall)
	sent      atomic.Uint64 // messages handed to the client
	bursts    atomic.Uint64 // paced wake-ups that sent something
	// late is how late each paced message was handed to the client
	// against its intended send time: the tool's own delay, which the
	// latency includes. Nil for unpaced producers, whose messages have
	// no intended time.
	late *timings
	err  error
}

// run publishes until count or the deadline, then waits for every ack.
func (p *producer) run(ctx context.Context, start int64) {
	payload := make([]byte, p.size)
	fillPayload(payload, p.payload, int(p.id)*payloadRing)
	opt := client.ToPartition(p.partition)
	if p.rate > 0 {
		p.err = p.paced(ctx, start, payload, opt)
	} else {
		p.err = p.unpaced(ctx, payload, opt)
	}
	if p.err == nil {
		p.err = p.c.Flush(ctx)
	}
}

// more reports whether message seq is still to be sent.
func (p *producer) more(seq uint64) bool {
	if p.count > 0 {
		return seq < uint64(p.count)
	}
	return seq&1023 != 0 || time.Now().Before(p.deadline)
}

// unpaced sends as fast as the client accepts, perCall messages per call
// (PublishBatchAsync; PublishAsync for one), reading the clock once per
// call, or once per 64 messages with one per call: the stamp is then at
// most 63 sends old, far below what the histogram resolves at these rates.
func (p *producer) unpaced(ctx context.Context, payload []byte, opt client.PublishOption) error {
	if p.perCall <= 1 {
		return p.unpacedSingle(ctx, payload, opt)
	}
	ring := p.ring(payload)
	if ring == nil {
		// The messages of a call need payloads of their own.
		ring = make([][]byte, p.perCall)
		for i := range ring {
			ring[i] = slices.Clone(payload)
		}
	}
	burst := make([]client.Message, p.perCall)
	fixed := len(ring) == len(burst) // each message keeps its payload
	for i := range burst {
		burst[i].Value = ring[i%len(ring)]
	}
	for seq := uint64(0); p.more(seq); {
		ts := now()
		stamp := epoch.Add(time.Duration(ts))
		n := 0
		for ; n < len(burst) && p.more(seq); n++ {
			m := &burst[n]
			if !fixed {
				m.Value = ring[seq%uint64(len(ring))]
			}
			putHeader(m.Value, p.id, seq, ts)
			m.Timestamp = stamp
			seq++
		}
		if err := p.c.PublishBatchAsync(ctx, p.topic, burst[:n], opt); err != nil {
			return err
		}
		p.sent.Store(seq)
	}
	return nil
}

// unpacedSingle is unpaced with one PublishAsync per message.
func (p *producer) unpacedSingle(ctx context.Context, payload []byte, opt client.PublishOption) error {
	var ts int64
	msg := client.Message{Value: payload}
	ring := p.ring(payload)
	for seq := uint64(0); p.more(seq); seq++ {
		if seq&63 == 0 {
			ts = now()
			msg.Timestamp = epoch.Add(time.Duration(ts))
		}
		if ring != nil {
			msg.Value = ring[seq%payloadRing]
		}
		putHeader(msg.Value, p.id, seq, ts)
		if err := p.c.PublishAsync(ctx, p.topic, msg, opt); err != nil {
			return err
		}
		p.sent.Store(seq + 1)
	}
	return nil
}

// intended is when the schedule sends message seq: at start + seq/rate,
// or with a burst window at the start of the window that time falls in.
func (p *producer) intended(start int64, seq uint64) int64 {
	at := int64(float64(seq) * 1e9 / p.rate)
	if p.window > 0 {
		at -= at % p.window
	}
	return start + at
}

// paced sends message seq at its intended time, stamping each with that
// time, and its latency counts from there; how late it handed each
// message to the client goes into p.late. It sleeps between bursts with nanosleep on a locked thread whose timer slack is 1 µs, and
// always for at least the quantum, even when behind: every wake-up costs
// the kernel a few microseconds of CPU, which at 100k wake-ups a second
// would take a core from the broker. Whatever fell due meanwhile goes out
// as one burst through PublishBatchAsync, written by this thread: at 100k
// and 500k msg/s that takes the client's writer goroutine, and its
// wake-up, out of every message's path (PERFORMANCE.md).
func (p *producer) paced(ctx context.Context, start int64, payload []byte, opt client.PublishOption) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	payloads := make([][]byte, 256)
	for i := range payloads {
		payloads[i] = slices.Clone(payload)
		if p.payload == PayloadJSON {
			fillPayload(payloads[i], p.payload, int(p.id)*payloadRing+i) // i < 256 < payloadRing
		}
	}
	burst := make([]client.Message, 0, len(payloads))
	seq := uint64(0)
	for p.more(seq) {
		due := p.intended(start, seq)
		ts := unix.NsecToTimespec(max(due-now(), p.quantum))
		_ = unix.Nanosleep(&ts, nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.bursts.Add(1)
		for t := now(); p.more(seq); {
			burst = burst[:0]
			handed := now()
			for ; p.more(seq) && len(burst) < len(payloads); seq++ {
				due := p.intended(start, seq)
				if due > t {
					break
				}
				b := payloads[len(burst)]
				putHeader(b, p.id, seq, due)
				p.late.record(max(handed-due, 0), handed)
				burst = append(burst, client.Message{Value: b, Timestamp: epoch.Add(time.Duration(due))})
			}
			if len(burst) == 0 {
				break
			}
			if err := p.c.PublishBatchAsync(ctx, p.topic, burst, opt); err != nil {
				return err
			}
			p.sent.Store(seq)
		}
	}
	return nil
}

// ring is the distinct payloads an unpaced producer cycles through for a
// filler that varies (PayloadJSON), or nil for one that does not, which
// keeps rewriting the one payload.
func (p *producer) ring(first []byte) [][]byte {
	if p.payload != PayloadJSON {
		return nil
	}
	ring := make([][]byte, payloadRing)
	ring[0] = first
	for i := 1; i < payloadRing; i++ {
		ring[i] = make([]byte, len(first))
		fillPayload(ring[i], p.payload, int(p.id)*payloadRing+i)
	}
	return ring
}
