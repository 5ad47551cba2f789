package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// Latency is a latency summary in microseconds.
type Latency struct {
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	P9999 float64 `json:"p9999"`
	Max   float64 `json:"max"`
}

// Result is what a run measured. JSON field names are part of the tool's
// interface: scripts read them.
type Result struct {
	Topic       string `json:"topic"`
	Producers   int    `json:"producers"`
	Subscribers int    `json:"subscribers"`
	Partitions  int    `json:"partitions"`
	Size        int    `json:"size"`
	TargetRate  int    `json:"target_rate"`
	// BurstIntervalUS is the paced schedule's burst interval (Config.BurstInterval).
	BurstIntervalUS float64 `json:"burst_interval_us,omitempty"`
	Published       uint64  `json:"published"`
	Delivered       uint64  `json:"delivered"`
	PublishSeconds  float64 `json:"publish_seconds"`
	PublishRate     float64 `json:"publish_rate"`
	DeliverRate     float64 `json:"deliver_rate"`
	MBPerSec        float64 `json:"mb_per_sec"`
	// LatencyUS counts from each message's intended send time, so it
	// holds any delay of the tool's producer as well as the broker's.
	LatencyUS Latency `json:"latency_us"`
	// ProducerLatenessUS is how late the paced producers handed each
	// message to the client against its intended time: the tool's own
	// share of LatencyUS. Close to LatencyUS means the tool was starved,
	// not the broker slow. Absent for unpaced runs.
	ProducerLatenessUS *Latency `json:"producer_lateness_us,omitempty"`
	Lost               uint64   `json:"lost"`
	Duplicated         uint64   `json:"duplicated"`
	Reordered          uint64   `json:"reordered"`
	Malformed          uint64   `json:"malformed"`
	MeanBurst          float64  `json:"mean_burst,omitempty"`
	Durable            bool     `json:"durable"`
	Storage            string   `json:"storage,omitempty"`
	Fsync              string   `json:"fsync,omitempty"`
	Replay             bool     `json:"replay"`
	Group              string   `json:"group,omitempty"`
	Ack                string   `json:"ack,omitempty"`
	Compression        string   `json:"compression"`
	Payload            string   `json:"payload,omitempty"`
	ToolCPU            float64  `json:"tool_cpu"`             // cores used by the tool
	BrokerCPU          float64  `json:"broker_cpu,omitempty"` // cores used by the broker (with BrokerPID)

	hist, late *hdrhistogram.Histogram
}

// ErrVerification is returned when messages were lost, duplicated or
// reordered: the run's figures stand, but the broker misbehaved.
var ErrVerification = errors.New("loadtest: delivery verification failed")

// Run performs a load test and returns its result. progress, if not nil,
// receives one line a second.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, progress: progress}
	defer r.close()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	return r.execute(ctx)
}

type run struct {
	cfg      Config
	topic    TopicShape // as the broker describes it
	progress io.Writer
	prods    []*producer
	subs     []*subscriber
	clients  []conn
}

func (r *run) close() {
	for _, c := range r.clients {
		_ = c.Close()
	}
}

// baseOptions are the options of every connection of the run: its name,
// TLS and credentials.
func (r *run) baseOptions() []client.Option {
	opts := []client.Option{client.WithName("ratatoskr-loadtest")}
	if r.cfg.TLS != nil {
		opts = append(opts, client.WithTLS(r.cfg.TLS))
	}
	switch {
	case r.cfg.User != "":
		opts = append(opts, client.WithCredentials(r.cfg.User, r.cfg.Password))
	case r.cfg.Token != "":
		opts = append(opts, client.WithToken(r.cfg.Token))
	}
	return opts
}

func (r *run) dial(ctx context.Context, opts ...client.Option) (conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialConn(dctx, &r.cfg, append(r.baseOptions(), opts...))
	if err == nil {
		r.clients = append(r.clients, c)
	}
	return c, err
}

// setup creates the topic and connects every producer and subscriber.
func (r *run) setup(ctx context.Context) error {
	admin, err := r.dial(ctx)
	if err != nil {
		return err
	}
	topic, existed, err := ensureTopic(ctx, admin, &r.cfg)
	if err != nil {
		return err
	}
	if existed && r.progress != nil {
		_, _ = fmt.Fprintf(r.progress, "using the existing topic %s\n", topic)
	}
	r.topic, r.cfg.Partitions = topic, topic.Partitions
	for i := range r.cfg.Subscribers {
		s := newSubscriber(r.cfg.Producers)
		if i == 0 && r.cfg.LatencyLog != "" {
			s.trace = make([][2]int64, 0, r.expectedMessages())
		}
		if r.cfg.Group == "" {
			if s.c, err = r.dial(ctx); err != nil {
				return err
			}
		}
		r.subs = append(r.subs, s)
	}
	if !r.cfg.Replay {
		if err := r.subscribe(ctx, client.Latest); err != nil {
			return err
		}
	}
	opts := []client.Option{client.WithBatchBytes(r.cfg.BatchBytes), client.WithLinger(r.cfg.Linger),
		client.WithCompression(r.cfg.Compression)}
	if r.cfg.Idempotence {
		opts = append(opts, client.WithIdempotence())
	}
	for i := range r.cfg.Producers {
		p := &producer{id: uint32(i), topic: r.cfg.Topic, partition: i % r.cfg.Partitions, size: r.cfg.Size,
			payload: r.cfg.Payload, perCall: r.cfg.PerCall}
		if p.c, err = r.dial(ctx, opts...); err != nil {
			return err
		}
		p.count = share(r.cfg.Count, r.cfg.Producers, i)
		p.rate = float64(r.cfg.Rate) / float64(r.cfg.Producers)
		p.quantum, p.window = int64(r.cfg.PaceQuantum), int64(r.cfg.BurstInterval)
		if p.rate > 0 {
			p.late = newTimings()
		}
		r.prods = append(r.prods, p)
	}
	return nil
}

// subscribe starts every subscriber's subscription at from.
func (r *run) subscribe(ctx context.Context, from client.Position) error {
	if r.cfg.Group != "" {
		return r.joinGroup(ctx, from)
	}
	opts := []client.SubscribeOption{client.StartAt(from)}
	if !r.cfg.GoroutineDispatch {
		opts = append(opts, client.DispatchInline())
	}
	for i, s := range r.subs {
		var err error
		if s.sub, err = s.c.subscribe(ctx, r.cfg.Topic, s.handle, opts...); err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
	}
	return nil
}

// joinGroup makes every subscriber a member of the run's group, which
// starts at from where it has no commits.
func (r *run) joinGroup(ctx context.Context, from client.Position) error {
	mode, _ := client.ParseAckMode(r.cfg.Ack)
	for i, s := range r.subs {
		cfg := client.GroupConfig{Group: r.cfg.Group, Topic: r.cfg.Topic, Mode: mode, Start: from,
			Handler: func(m *client.GroupMessage) error {
				s.handle(&m.Delivery)
				return nil
			}}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		s.gc, err = client.JoinGroup(jctx, r.cfg.Server, cfg, r.baseOptions()...)
		cancel()
		if err != nil {
			return fmt.Errorf("group member %d: %w", i, err)
		}
	}
	return nil
}

// expectedMessages is how many messages a subscriber should receive, for
// sizing the latency log: the count, or the rate over the duration with
// some slack, or for an unpaced run of unknown length the log's bound.
func (r *run) expectedMessages() int {
	switch {
	case r.cfg.Count > 0:
		return min(r.cfg.Count, MaxLatencyLog)
	case r.cfg.Rate > 0:
		return min(int(float64(r.cfg.Rate)*r.cfg.Duration.Seconds()*1.05)+1024, MaxLatencyLog)
	}
	return MaxLatencyLog
}

// share is producer i's part of n messages.
func share(n, parts, i int) int {
	if n == 0 {
		return 0
	}
	s := n / parts
	if i < n%parts {
		s++
	}
	return s
}

func (r *run) execute(ctx context.Context) (*Result, error) {
	cpu := startCPU(r.cfg.BrokerPID)
	start := now()
	deadline := time.Now().Add(r.cfg.Duration)
	var wg sync.WaitGroup
	for _, p := range r.prods {
		p.deadline = deadline
		wg.Go(func() { p.run(ctx, start) })
	}
	prodDone := make(chan struct{})
	go func() { wg.Wait(); close(prodDone) }()
	r.report(ctx, start, prodDone)
	pubEnd := now()
	var errs []error
	for _, p := range r.prods {
		if p.err != nil {
			errs = append(errs, fmt.Errorf("producer %d: %w", p.id, p.err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	deliverStart := start
	if r.cfg.Replay && len(r.subs) > 0 {
		deliverStart = now()
		// From this run's first message, not the log's: every message is
		// stamped at or after start, and a topic used before holds older
		// ones, which the verification would count as duplicates.
		if err := r.subscribe(ctx, client.AtTime(epoch.Add(time.Duration(start)))); err != nil {
			return nil, err
		}
	}
	r.drain(ctx)
	res := r.result(start, pubEnd)
	if r.cfg.Replay {
		res.replayRate(deliverStart, r.subs)
	}
	res.ToolCPU, res.BrokerCPU = cpu.stop()
	if r.cfg.HistFile != "" {
		if err := writeHist(r.cfg.HistFile, res.hist); err != nil {
			return res, err
		}
	}
	if r.cfg.LatencyLog != "" && len(r.subs) > 0 {
		if err := writeLatencyLog(r.cfg.LatencyLog, r.subs[0], start); err != nil {
			return res, err
		}
	}
	if res.Lost+res.Duplicated+res.Reordered+res.Malformed > 0 {
		return res, fmt.Errorf("%w: lost %d, duplicated %d, reordered %d, malformed %d",
			ErrVerification, res.Lost, res.Duplicated, res.Reordered, res.Malformed)
	}
	return res, nil
}

// report prints a progress line a second until the producers are done.
func (r *run) report(ctx context.Context, start int64, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastPub, lastRecv uint64
	last := start
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := now()
		pub, recv := r.sent(), r.received()
		secs := float64(t-last) / 1e9
		lat, late := newHist(), newHist()
		for _, s := range r.subs {
			if h := s.lat.take(); h != nil {
				lat.Merge(h)
			}
		}
		for _, p := range r.prods {
			if p.late == nil {
				continue
			}
			if h := p.late.take(); h != nil {
				late.Merge(h)
			}
		}
		if r.progress != nil {
			line := fmt.Sprintf("%6.1fs  publish %10s msg/s  deliver %10s msg/s  p99 %s",
				float64(t-start)/1e9, si(float64(pub-lastPub)/secs), si(float64(recv-lastRecv)/secs), quantile(lat, 99))
			if r.cfg.Rate > 0 {
				line += "  producer late p99 " + quantile(late, 99)
			}
			_, _ = fmt.Fprintln(r.progress, line)
		}
		lastPub, lastRecv, last = pub, recv, t
	}
}

func (r *run) sent() (n uint64) {
	for _, p := range r.prods {
		n += p.sent.Load()
	}
	return n
}

func (r *run) received() (n uint64) {
	for _, s := range r.subs {
		n += s.received.Load()
	}
	return n
}

// drain waits until every subscriber has every published message, or no
// subscriber has made progress for the drain timeout.
func (r *run) drain(ctx context.Context) {
	want := r.sent()
	lastProgress, lastTotal := time.Now(), uint64(0)
	for ctx.Err() == nil {
		total, complete, unique := uint64(0), true, uint64(0)
		for _, s := range r.subs {
			u := s.unique.Load()
			unique += u
			total += s.received.Load()
			complete = complete && u >= want
		}
		if r.cfg.Group != "" {
			complete = unique >= want // members share the messages
		}
		if complete {
			break
		}
		if total != lastTotal {
			lastProgress, lastTotal = time.Now(), total
		} else if time.Since(lastProgress) > r.cfg.Drain {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Stop the handlers before reading their state.
	for _, s := range r.subs {
		if s.gc != nil {
			_ = s.gc.Close()
		}
		if s.sub == nil {
			continue
		}
		ctx2, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.sub.Unsubscribe(ctx2)
		cancel()
		<-s.sub.Done()
	}
}

func (r *run) result(start, pubEnd int64) *Result {
	res := &Result{Producers: r.cfg.Producers, Subscribers: r.cfg.Subscribers, Partitions: r.cfg.Partitions,
		Size: r.cfg.Size, TargetRate: r.cfg.Rate, Published: r.sent(), hist: newHist(), late: newHist(),
		Topic: r.topic.Name, Durable: r.topic.Storage != "memory", Storage: r.topic.Storage, Fsync: r.topic.Fsync,
		Compression: r.cfg.Compression.String(), Payload: r.cfg.Payload}
	if r.cfg.Rate > 0 {
		res.BurstIntervalUS = float64(r.cfg.BurstInterval) / 1e3
	}
	res.PublishSeconds = float64(pubEnd-start) / 1e9
	res.PublishRate = float64(res.Published) / res.PublishSeconds
	lastRecv := start
	var bursts uint64
	for _, p := range r.prods {
		bursts += p.bursts.Load()
		if p.late != nil {
			res.late.Merge(p.late.all)
		}
	}
	if bursts > 0 {
		res.MeanBurst = float64(res.Published) / float64(bursts)
	}
	for _, s := range r.subs {
		res.hist.Merge(s.lat.all)
		res.Delivered += s.received.Load()
		lastRecv = max(lastRecv, s.lastRecv.Load())
		res.Malformed += s.malformed
		for i := range s.seqs {
			t := &s.seqs[i]
			res.Duplicated += t.dup
			res.Reordered += t.reord
		}
		if u := s.unique.Load(); u < res.Published && r.cfg.Group == "" {
			res.Lost += res.Published - u
		}
	}
	if r.cfg.Group != "" {
		union, sum := groupUnion(r.subs, r.cfg.Producers)
		if union < res.Published {
			res.Lost = res.Published - union
		}
		res.Duplicated += sum - union
		res.Group = r.cfg.Group
		res.Ack = r.cfg.Ack
	}
	bytesPer := float64(r.cfg.Size)
	res.MBPerSec = res.PublishRate * bytesPer / 1e6
	if len(r.subs) > 0 && lastRecv > start {
		res.DeliverRate = float64(res.Delivered) / (float64(lastRecv-start) / 1e9)
		res.MBPerSec = res.DeliverRate * bytesPer / 1e6
	}
	if res.hist.TotalCount() > 0 {
		res.LatencyUS = summarize(res.hist)
	}
	if res.late.TotalCount() > 0 {
		l := summarize(res.late)
		res.ProducerLatenessUS = &l
	}
	return res
}

// groupUnion counts the distinct messages the members received together,
// and the sum of what each received once.
func groupUnion(subs []*subscriber, producers int) (union, sum uint64) {
	for p := range producers {
		var or []uint64
		for _, s := range subs {
			seen := s.seqs[p].seen
			if len(or) < len(seen) {
				or = append(or, make([]uint64, len(seen)-len(or))...)
			}
			for i, w := range seen {
				or[i] |= w
				sum += uint64(bits.OnesCount64(w))
			}
		}
		for _, w := range or {
			union += uint64(bits.OnesCount64(w))
		}
	}
	return union, sum
}

// summarize is a histogram's quantiles in microseconds.
func summarize(h *hdrhistogram.Histogram) Latency {
	q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e3 }
	return Latency{P50: q(50), P90: q(90), P99: q(99), P999: q(99.9), P9999: q(99.99), Max: float64(h.Max()) / 1e3}
}

// quantile is a histogram's quantile q for people, or "-" when empty.
func quantile(h *hdrhistogram.Histogram, q float64) string {
	if h.TotalCount() == 0 {
		return "-"
	}
	return FormatMicros(float64(h.ValueAtQuantile(q)) / 1e3)
}

// si formats a rate with a k/M suffix.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// writeHist writes the histogram in HdrHistogram's percentile text format,
// values in microseconds.
func writeHist(path string, h *hdrhistogram.Histogram) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := h.PercentilesPrint(f, 5, 1000); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// replayRate recomputes the delivery rate from when the subscribers
// started replaying. Latencies count from the original send, so they say
// how old the replayed messages were, not how fast the replay was.
func (res *Result) replayRate(from int64, subs []*subscriber) {
	last := from
	for _, s := range subs {
		last = max(last, s.lastRecv.Load())
	}
	if last > from {
		res.DeliverRate = float64(res.Delivered) / (float64(last-from) / 1e9)
		res.MBPerSec = res.DeliverRate * float64(res.Size) / 1e6
	}
	res.Replay = true
}
