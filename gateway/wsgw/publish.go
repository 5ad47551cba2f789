package wsgw

import (
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// publisher publishes a socket's publish commands and answers them.
//
// A client pipelines publishes (many in flight, each answered by id), and
// the records of one partition must be stored in the order they came in.
// The session's PublishBatch queues a call's records in order and then
// waits for their acks, so calls made one after another keep the order
// but take a round trip each, and calls made at once may interleave. The
// publisher therefore runs rounds: it takes every command that arrived
// while the last round was in flight, joins their records by topic and
// partition into one PublishBatch each (the groups run at once: they
// cannot interleave), and answers each command from its share of the
// acks. Like a group commit, a round carries more the longer the last
// one took.
type publisher struct {
	c *conn
	// q holds the commands read and not yet taken by a round. Its length
	// bounds how many commands wait; budget bounds their bytes (and those
	// of the round in flight): when either is full, the read loop waits,
	// so the socket is not read and TCP pushes back on the client.
	q      chan *command
	budget *semaphore.Weighted
	size   int
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once

	groups []*pubGroup // reused across rounds
}

// maxRound bounds the commands of one round.
const maxRound = 256

// pubGroup is one PublishBatch of a round: the records of the round for
// one topic and partition, and where each command's share begins.
type pubGroup struct {
	topic     string
	partition int32
	msgs      []client.Message
	spans     []pubSpan
	acks      []client.Ack
	err       error
}

// pubSpan is the records cmd.Records[from:from+n], msgs[at:at+n] of a group.
type pubSpan struct {
	cmd      *command
	from, at int
	n        int
}

func newPublisher(c *conn) *publisher {
	size := c.h.cfg.MaxPublishBytes
	return &publisher{c: c, q: make(chan *command, maxRound), budget: semaphore.NewWeighted(int64(size)), size: size,
		quit: make(chan struct{}), done: make(chan struct{})}
}

// enqueue hands a publish to the publisher, waiting for room.
func (p *publisher) enqueue(cmd *command) error {
	cmd.size = publishSize(cmd, p.size)
	if err := p.budget.Acquire(p.c.ctx, int64(cmd.size)); err != nil {
		return err
	}
	select {
	case p.q <- cmd:
		return nil
	case <-p.c.ctx.Done():
		p.budget.Release(int64(cmd.size))
		return p.c.ctx.Err()
	}
}

// stop ends the publisher once the socket's context is done, and waits.
func (p *publisher) stop() {
	p.once.Do(func() { close(p.quit) })
	<-p.done
}

func (p *publisher) run() {
	defer close(p.done)
	round := make([]*command, 0, maxRound)
	for {
		select {
		case cmd := <-p.q:
			round = append(round[:0], cmd)
		case <-p.quit:
			p.drain()
			return
		}
	more:
		for len(round) < maxRound {
			select {
			case cmd := <-p.q:
				round = append(round, cmd)
			default:
				break more
			}
		}
		p.publish(round)
		for _, cmd := range round {
			p.answer(cmd)
		}
		clear(round)
	}
}

// drain releases what is queued when the socket ends.
func (p *publisher) drain() {
	for {
		select {
		case cmd := <-p.q:
			p.c.done(cmd)
		default:
			return
		}
	}
}

// publish runs one round.
func (p *publisher) publish(round []*command) {
	groups := p.group(round, p.c.sess.MaxMessageBytes())
	if len(groups) == 1 {
		p.publishGroup(groups[0])
	} else {
		var wg sync.WaitGroup
		for _, g := range groups {
			wg.Go(func() { p.publishGroup(g) })
		}
		wg.Wait()
	}
	p.settle(groups)
}

// settle gives each command its share of its groups' acks, and a group's
// error only when one of the command's own records was not stored: the
// group holds other commands' records too, and a command whose records
// were stored must be acknowledged, or its client, retrying it, stores
// it twice.
func (p *publisher) settle(groups []*pubGroup) {
	for _, g := range groups {
		for _, s := range g.spans {
			acks := g.acks[s.at : s.at+s.n]
			if g.err != nil && s.cmd.err == nil && !allStored(acks) {
				s.cmd.err = g.err
			}
			copy(s.cmd.acks[s.from:s.from+s.n], acks)
		}
		clear(g.msgs) // drop the references to the frames
		g.msgs, g.spans, g.acks, g.err = g.msgs[:0], g.spans[:0], nil, nil
	}
}

func allStored(acks []client.Ack) bool {
	for _, a := range acks {
		if a.Offset < 0 {
			return false
		}
	}
	return true
}

// group joins the round's records by topic and partition, in order. A
// command with a record larger than limit (the broker's largest message)
// fails alone, before any of its records joins a group: PublishBatch
// refuses a whole call for one such record, which would fail the other
// commands of the round with it.
func (p *publisher) group(round []*command, limit int) []*pubGroup {
	used := 0
	find := func(topic string, part int32) *pubGroup {
		for _, g := range p.groups[:used] {
			if g.topic == topic && g.partition == part {
				return g
			}
		}
		if used == len(p.groups) {
			p.groups = append(p.groups, &pubGroup{})
		}
		g := p.groups[used]
		g.topic, g.partition = topic, part
		used++
		return g
	}
	for _, cmd := range round {
		cmd.acks = slices.Grow(cmd.acks[:0], len(cmd.Records))[:len(cmd.Records)]
		if cmd.err = oversized(cmd, limit); cmd.err != nil {
			for i := range cmd.acks {
				cmd.acks[i] = client.Ack{Partition: -1, Offset: -1}
			}
			continue
		}
		for i := 0; i < len(cmd.Records); {
			part := cmd.partition(i)
			j := i + 1
			for j < len(cmd.Records) && cmd.partition(j) == part {
				j++
			}
			g := find(cmd.Topic, part)
			g.spans = append(g.spans, pubSpan{cmd: cmd, from: i, at: len(g.msgs), n: j - i})
			g.msgs = append(g.msgs, cmd.Records[i:j]...)
			i = j
		}
	}
	return p.groups[:used]
}

// oversized is the error of a command with a record larger than limit,
// as PublishBatch words it; nil when every record fits.
func oversized(cmd *command, limit int) error {
	for i := range cmd.Records {
		m := &cmd.Records[i]
		if size := wire.MessageSize(m.Key, m.Value, m.Headers); size > limit {
			return wire.Errorf(wire.CodeMessageTooLarge, "record "+strconv.Itoa(i)+": message of "+
				strconv.Itoa(size)+" bytes; the broker allows "+strconv.Itoa(limit))
		}
	}
	return nil
}

func (p *publisher) publishGroup(g *pubGroup) {
	var opts []client.PublishOption
	if g.partition >= 0 {
		opts = append(opts, client.ToPartition(int(g.partition)))
	}
	g.acks, g.err = p.c.sess.PublishBatch(p.c.ctx, g.topic, g.msgs, opts...)
	if len(g.acks) < len(g.msgs) { // an error before any was queued
		g.acks = make([]client.Ack, len(g.msgs))
		for i := range g.acks {
			g.acks[i] = client.Ack{Partition: -1, Offset: -1}
		}
	}
}

// answer replies to one command of a round and releases it.
func (p *publisher) answer(cmd *command) {
	m := p.c.h.g.Metrics()
	m.Request(Via, cmd.err)
	if cmd.err != nil {
		p.c.replyError(cmd, cmd.err)
	} else {
		m.Published(Via, len(cmd.Records))
		p.c.replyAck(cmd)
	}
	p.budget.Release(int64(cmd.size))
	p.c.done(cmd)
}
