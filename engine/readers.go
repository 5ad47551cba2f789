package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/topic"
)

// Reader replicas. A consumer group's coordinator delivers each partition
// of the consumed topic from its own replica (docs/CLUSTER.md "Consumer
// groups"). A coordinator that holds no replica of a partition its groups
// consume asks the controller for a reader (meta.SetReader): a replica
// that is a Raft learner of the partition's group, caught up like any new
// replica (by whole batches), that counts for no quorum and never leads.
// A replica added here (a reader, or a voter moved here) serves the
// groups only once it has caught up with what its group committed when
// it was added, which a ReadIndex through its leader confirms
// (cluster.Host.CatchUp): the groups consuming its topic here then start
// again over the new partitions (coord.Coordinator.TopicReplaced), so a
// group starting at the end does not take a replica's end that is still
// far behind for it. A reader that no group here has consumed for
// readerLinger is given up.

var (
	// readerLinger is how long a reader replica stays after the last
	// member of a group here consuming its topic left. A variable: the
	// tests shorten it.
	readerLinger = time.Minute
	// readerRetry is how soon a SetReader proposed for a partition may be
	// proposed again when the metadata does not show it yet.
	readerRetry = 2 * time.Second
)

type readerKey struct {
	topic string
	part  int
}

// readerBook is the node's reader bookkeeping. The applier adds the
// replicas it built (added), the members loop does the rest (tendReaders),
// and the host's goroutine answers the catch-up reads.
type readerBook struct {
	mu    sync.Mutex
	asked map[readerKey]time.Time // a SetReader proposed at
	used  map[string]time.Time    // a topic's groups here last had members at
	// fresh are the replicas added here whose catch-up is not confirmed
	// yet, by topic and group: true once confirmed, false while a read is
	// pending or to be asked.
	fresh   map[string]map[uint64]bool
	reading map[uint64]bool // groups with a catch-up read in flight
}

func newReaderBook() *readerBook {
	return &readerBook{asked: map[readerKey]time.Time{}, used: map[string]time.Time{},
		fresh: map[string]map[uint64]bool{}, reading: map[uint64]bool{}}
}

// added notes that the applier built a replica of group here for topic.
func (b *readerBook) added(topic string, group uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fresh[topic] == nil {
		b.fresh[topic] = map[uint64]bool{}
	}
	b.fresh[topic][group] = false
}

// tendReaders runs on the members loop: it asks for the readers the
// groups here need and gives up those they no longer do, and starts the
// groups again over replicas that caught up.
func (c *clusterNode) tendReaders(v *meta.State) {
	now := time.Now()
	b := c.readers
	need := map[string]bool{}
	for _, g := range c.e.groups.List() {
		if g.Members > 0 {
			need[g.Topic] = true
		}
	}
	if n, ok := v.Node(c.id); !ok || n.Status != meta.NodeActive {
		need = nil // a draining node takes no new replicas, readers included (SetReader refuses it)
	}
	b.mu.Lock()
	// Only the topics the groups here consume, and those this node reads:
	// not every partition of the cluster, four times a second.
	for name := range need {
		b.used[name] = now
		ti, ok := v.Topic(name)
		if !ok {
			continue
		}
		for i := range ti.Partitions {
			if pi, _ := v.Partition(name, i); !pi.Holds(c.id) {
				c.askReader(name, i, true, now)
			}
		}
	}
	for name, parts := range v.ReadsOf(c.id) {
		if need[name] {
			continue
		}
		if _, ok := b.used[name]; !ok {
			b.used[name] = now // first seen idle: the linger counts from here
		}
		if now.Sub(b.used[name]) >= readerLinger {
			for _, i := range parts {
				c.askReader(name, i, false, now)
			}
		}
	}
	for name := range b.used {
		if _, ok := v.Topic(name); !ok {
			delete(b.used, name)
		}
	}
	for key := range b.asked {
		if ti, ok := v.Topic(key.topic); !ok || key.part >= ti.Partitions {
			delete(b.asked, key) // a deleted topic's: forgotten, as used
		}
	}
	reads, ready := b.pending()
	b.mu.Unlock()
	for _, r := range reads {
		c.host.CatchUp(r.group, func(_ cluster.ReadState, err error) { b.confirmed(r, err) })
	}
	for _, name := range ready {
		if t := c.e.topics.get([]byte(name)); t != nil {
			c.e.groups.TopicReplaced(topic.Group{T: t})
		}
	}
}

// askReader proposes SetReader for partition i of topic in the
// background, unless it was proposed less than readerRetry ago; b.mu
// held.
func (c *clusterNode) askReader(name string, i int, on bool, now time.Time) {
	key := readerKey{name, i}
	if at, ok := c.readers.asked[key]; ok && now.Sub(at) < readerRetry {
		return
	}
	c.readers.asked[key] = now
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := c.propose(ctx, meta.SetReader{Topic: name, Partition: i, Node: c.id, On: on})
		c.e.log.Info(map[bool]string{true: "asked for a reader replica", false: "gave up a reader replica"}[on],
			"topic", name, "partition", i, "err", err)
	}()
}

type freshRead struct {
	topic string
	group uint64
}

// pending returns the catch-up reads to ask (marking them in flight),
// and the topics whose fresh replicas all confirmed theirs (forgetting
// them); mu held.
func (b *readerBook) pending() (reads []freshRead, ready []string) {
	for name, groups := range b.fresh {
		done := true
		for group, ok := range groups {
			if ok {
				continue
			}
			done = false
			if !b.reading[group] {
				b.reading[group] = true
				reads = append(reads, freshRead{name, group})
			}
		}
		if done {
			delete(b.fresh, name)
			ready = append(ready, name)
		}
	}
	return reads, ready
}

// confirmed takes a catch-up read's outcome (on the host's goroutine): a
// replica that caught up is ready; one whose group no longer runs here
// is forgotten; any other failure is asked again.
func (b *readerBook) confirmed(r freshRead, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.reading, r.group)
	groups := b.fresh[r.topic]
	if _, still := groups[r.group]; !still {
		return
	}
	switch {
	case err == nil:
		groups[r.group] = true
	case errors.Is(err, cluster.ErrNoGroup) || errors.Is(err, cluster.ErrStopped):
		delete(groups, r.group)
	}
}
