package server

import (
	"runtime"
	"sync"
	"time"
)

// Replays (docs/DESIGN.md, "Storage and durability", on reads).
//
// A subscription that starts at an offset, a time or the earliest message
// replays each partition's log before it joins the live tail, and so does
// a subscription resumed after it was detached, and a group member's feed
// in none and offset mode. A replay is a replayJob, a record of a few
// words, run in steps on a fixed number of worker goroutines fed by a
// queue. A step reads at most replayChunk and hands it to the subscriber's
// outbox, or asks the shard to join the live tail; then the job goes to
// the back of the queue, so a long replay does not keep a worker from the
// others. A job whose subscriber is under pressure leaves the queue for
// replayPause (a timer, not a sleeping goroutine), so replays stuck behind
// slow subscribers keep no worker either.
//
// Bound: replaysPerCPU workers per CPU, at least 8, per broker.
// They start as jobs queue and end when the queue is empty, so an idle
// broker has none. The queue holds each job at most once, and the jobs are
// bounded by the subscriptions times their partitions. Cancelling a replay
// (unsubscribe, connection closed) takes effect at its next step, whether
// it is queued, paused or running: the step ends it without reading.
const replaysPerCPU = 4

// replayPause is how long a replay waits, off the queue, while its
// subscriber's outbox is under pressure before it looks again.
const replayPause = time.Millisecond

// replayWorkers is the bound on a broker's replay workers.
func replayWorkers() int { return max(8, replaysPerCPU*runtime.GOMAXPROCS(0)) }

// replayNext is what a replay step asks for next.
type replayNext int

const (
	replayMore    replayNext = iota // queue it again
	replayPaused                    // the subscriber is under pressure: queue it after replayPause
	replayDone                      // the replay has ended
	replayTailing                   // a tailing replay at the end: queue it after tailPoll
)

// tailPoll is how often a tailing replay (a group feed of a replicated
// partition, replayJob.tail) at the end of what its replica shows looks
// again: the latency it adds to a group's deliveries in a cluster.
const tailPoll = 5 * time.Millisecond

// replayPool runs replay jobs on at most limit workers. Its queue is an
// intrusive list, so queueing allocates nothing.
type replayPool struct {
	limit int

	mu         sync.Mutex
	head, tail *replayJob
	workers    int // running, at most limit
	peak       int // the most workers ever running at once, for tests
}

func newReplayPool(limit int) *replayPool {
	return &replayPool{limit: limit}
}

// start queues a new job. Its pause timer is made here, before any worker
// can see the job, and only ever queues it again.
func (q *replayPool) start(j *replayJob) {
	j.timer = time.AfterFunc(time.Hour, func() { q.push(j) })
	j.timer.Stop()
	q.push(j)
}

// push queues j and starts a worker if fewer than limit are running; a
// running worker takes it otherwise.
func (q *replayPool) push(j *replayJob) {
	q.mu.Lock()
	q.link(j)
	spawn := q.workers < q.limit
	if spawn {
		q.workers++
		q.peak = max(q.peak, q.workers)
	}
	q.mu.Unlock()
	if spawn {
		go q.work()
	}
}

// link appends j to the queue. The caller holds mu.
func (q *replayPool) link(j *replayJob) {
	if q.tail == nil {
		q.head = j
	} else {
		q.tail.next = j
	}
	q.tail = j
}

// work runs steps of queued jobs until the queue is empty.
func (q *replayPool) work() {
	for j := q.pop(); j != nil; j = q.pop() {
		switch j.step() {
		case replayMore:
			// Back of the queue without starting a worker: this one is
			// running and takes it when its turn comes.
			q.mu.Lock()
			q.link(j)
			q.mu.Unlock()
		case replayPaused:
			j.timer.Reset(replayPause)
		case replayTailing:
			j.timer.Reset(tailPoll)
		case replayDone:
			if j.done != nil {
				close(j.done)
			}
		}
	}
}

// pop takes the oldest job; when there is none the calling worker ends
// (nil), in the same critical section, so a push never finds a worker
// counted that will not look at the queue again.
func (q *replayPool) pop() *replayJob {
	q.mu.Lock()
	defer q.mu.Unlock()
	j := q.head
	if j == nil {
		q.workers--
		return nil
	}
	q.head, j.next = j.next, nil
	if q.head == nil {
		q.tail = nil
	}
	return j
}

// stats reports the workers running now and the most ever at once.
func (q *replayPool) stats() (workers, peak int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.workers, q.peak
}
