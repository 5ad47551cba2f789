package server

import (
	"strconv"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"

	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Work that touches the disk (creating, deleting or reconfiguring a topic:
// opening logs, writing topics.json, fsyncs) never runs on an event loop:
// one such request used to freeze every connection of its loop for as long
// as the disk took (2 s for a 1024-partition topic, 7 s for 990
// auto-creates). A session hands such work to the disk worker and takes
// no more frames until the answer is in (session.offLoop): frames sent
// after a CreateTopic still see the topic, as they did when the loop
// waited, but the loop serves its other connections meanwhile.

// diskWorker runs disk work on a goroutine of its own, in submission
// order. Its queue holds at most one job per parked connection, so it is
// bounded by the connection limit.
type diskWorker struct {
	mu     sync.Mutex
	queue  []func()
	closed bool
	kick   chan struct{}
	done   chan struct{}
}

func newDiskWorker() *diskWorker {
	return &diskWorker{kick: make(chan struct{}, 1), done: make(chan struct{})}
}

func (w *diskWorker) start() { go w.run() }

// submit queues job. After close it runs job on the caller's goroutine:
// the loops are gone by then, so no loop waits for it.
func (w *diskWorker) submit(job func()) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		job()
		return
	}
	w.queue = append(w.queue, job)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *diskWorker) run() {
	defer close(w.done)
	for range w.kick {
		for {
			w.mu.Lock()
			if len(w.queue) == 0 {
				closed := w.closed
				w.mu.Unlock()
				if closed {
					return
				}
				break
			}
			job := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.mu.Unlock()
			job()
		}
	}
}

// close finishes the queued jobs and stops the worker. Called after the
// event loops have stopped (their connections' close ran what was parked);
// started is whether run was started.
func (w *diskWorker) close(started bool) {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	if started {
		select {
		case w.kick <- struct{}{}:
		default:
		}
		<-w.done
	}
}

// offLoop runs work on the disk worker and parks the session until its
// answer is in: work returns then, which runs back on the connection's
// loop to answer the request (a non-nil error closes the connection, as a
// handler's does), after which the session goes on with the frames that
// arrived meanwhile. then also runs when the connection closed meanwhile,
// to release what the request held: whoever takes it from s.pending first
// runs it (the loop's task, the session's close, or the worker itself
// once the session has closed), so it runs exactly once even when the
// loop stops without running its task (shutdown).
func (s *session) offLoop(work func() (then func() error)) {
	s.park(func(answer func(then func() error)) {
		s.srv.diskWork.submit(func() { answer(work()) })
	})
}

// park parks the session until a request's answer is in, as offLoop
// does, for work that runs on its own: start is called at once and
// hands the answer, once, from any goroutine, to answer; then runs back
// on the connection's loop (or on answer's goroutine once the session
// has closed, to release what the request held).
func (s *session) park(start func(answer func(then func() error))) {
	s.parked = true
	t := s.t
	start(func(then func() error) {
		fn := func() bool {
			s.parked = false
			return then() != nil
		}
		s.pending.Store(&fn)
		if s.closedDone.Load() {
			s.runPending()
			return
		}
		t.onLoop(s.runPending)
	})
}

// runPending runs the parked request's answer, if no one has yet.
func (s *session) runPending() (closeConn bool) {
	if fn := s.pending.Swap(nil); fn != nil {
		return (*fn)()
	}
	return false
}

// withTopic calls then with the named topic: at once when it exists, else
// after auto-creating it off the loop (offLoop). When the topic is missing
// and may not be created, then gets the reason.
func (s *session) withTopic(name []byte, then func(*topic.Topic, error) error) error {
	if t := s.lookup(name); t != nil {
		return then(t, nil)
	}
	n, err := s.qualify(string(name))
	if err != nil {
		return then(nil, err)
	}
	if err := s.srv.mayAutoCreate(name); err != nil {
		return then(nil, err)
	}
	if err := s.may(auth.ResTopic, string(name), auth.OpCreate); err != nil {
		return then(nil, err)
	}
	by := s.by
	s.offLoop(func() func() error {
		t, err := s.srv.b.CreateTopic(by, n, 0, nil, true)
		return func() error {
			if s.closed { // gone meanwhile: then only releases what it holds
				_ = then(nil, errSessionClosed)
				return nil
			}
			return then(t, err)
		}
	})
	return nil
}

// mayAutoCreate says why a missing topic may not be created on first use:
// auto-creation is off, or its rate limit is reached.
func (srv *Server) mayAutoCreate(name []byte) error {
	if !srv.cfg.AutoCreateTopics {
		return wire.Errorf(wire.CodeUnknownTopic,
			"no topic named "+strconv.Quote(string(name))+" and auto-creation is off")
	}
	if !srv.autoCreates.allow(time.Now()) {
		return wire.Errorf(wire.CodeLimitExceeded, "no topic named "+strconv.Quote(string(name))+
			", and topic auto-creation is limited to "+strconv.FormatFloat(srv.cfg.AutoCreateRate, 'g', -1, 64)+
			" topics a second; retry later or create it first")
	}
	return nil
}

// tokenBucket is a rate limit: rate events a second, in bursts of up to
// burst.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64) *tokenBucket {
	burst := max(1, rate)
	return &tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// allow takes a token if there is one.
func (b *tokenBucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
