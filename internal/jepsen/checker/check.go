package checker

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Result is the verdict on a history.
type Result struct {
	Violations []Violation // sorted by kind, partition, offset, value
	Stats      Stats
	byKind     map[Kind]int
}

// Stats counts what the history held.
type Stats struct {
	Publishes, Acked, Failed, Unknown, Pending int
	// UncertainStored counts the values published with an unknown or no
	// outcome that some log holds: stored after all.
	UncertainStored            int
	Reads, FinalReads, Records int
	Deliveries, Streams        int // deliveries, and consumer streams (consumer, partition)
	GroupOffsets               int
	Partitions                 int
	// AckChecks counts the (acknowledged message, final read) pairs
	// compared: how much the lost-ack check looked at; AckRetained the
	// pairs not compared because the message is below the read's start
	// (retention removed it there).
	AckChecks, AckRetained int
	// Jumps counts the consumer jumps recorded, JumpsTaken the skips in
	// delivery streams that jumps explained.
	Jumps, JumpsTaken int
}

// OK reports whether the history breaks no property.
func (r Result) OK() bool { return len(r.Violations) == 0 }

// Count returns the number of violations of kind k.
func (r Result) Count(k Kind) int { return r.byKind[k] }

// Check verifies a history; see the package doc for the properties.
func Check(h *History) Result {
	c := &checker{values: map[part]map[string]*valueInfo{}, atOffset: map[part]*index[int64, string]{},
		offsetsOf: map[part]*index[string, int64]{}, reported: map[string]bool{}, acks: map[part][]*Publish{}}
	c.publishes(h.Publishes)
	for i := range h.Reads {
		r := &h.Reads[i]
		c.res.Stats.Reads++
		if r.Final {
			c.res.Stats.FinalReads++
		}
		c.res.Stats.Records += len(r.Records)
		pt := part{r.Topic, r.Partition}
		if len(r.Records) > 0 && r.Records[0].Offset > r.Start {
			c.add(Gap, pt, r.Start, "", "%s starts at offset %d, but its first record is at %d (%q)",
				r.Source, r.Start, r.Records[0].Offset, r.Records[0].Value)
		}
		c.source(pt, r.Source, r.Records, nil)
	}
	c.deliveries(h.Deliveries, h.Jumps)
	c.conflicts()
	c.reordered()
	for i := range h.Reads {
		if h.Reads[i].Final {
			c.lostAcks(&h.Reads[i])
		}
	}
	c.uncertainStored()
	c.groupOffsets(h.GroupOffsets)
	c.finish()
	return c.res
}

// valueInfo is what the producers did with one value of one partition.
type valueInfo struct {
	copies int // attempts that may have stored it: acked, unknown, pending
	failed int // attempts refused for certain
	acks   []*Publish
	seen   bool // found in some log or delivery
	sure   bool // every attempt was acked or failed
}

type checker struct {
	res    Result
	values map[part]map[string]*valueInfo
	// atOffset: for each offset, the values seen there and the first
	// source that showed each; offsetsOf: the reverse.
	atOffset  map[part]*index[int64, string]
	offsetsOf map[part]*index[string, int64]
	reported  map[string]bool     // FailedStored and Phantom, once per value
	acks      map[part][]*Publish // the acked publishes, in history order
}

func (c *checker) publishes(pubs []Publish) {
	for i := range pubs {
		p := &pubs[i]
		c.res.Stats.Publishes++
		vi := c.value(part{p.Topic, p.Partition}, p.Value)
		switch p.Outcome {
		case Acked:
			c.res.Stats.Acked++
			vi.copies++
			vi.acks = append(vi.acks, p)
			c.acks[part{p.Topic, p.Partition}] = append(c.acks[part{p.Topic, p.Partition}], p)
			c.observe(part{p.Topic, p.Partition}, p.Offset, p.Value, fmt.Sprintf("the ack to producer %d", p.Producer))
		case Failed:
			c.res.Stats.Failed++
			vi.failed++
		case Unknown:
			c.res.Stats.Unknown++
			vi.copies++
		default:
			c.res.Stats.Pending++
			vi.copies++
		}
	}
	for _, vs := range c.values {
		for _, vi := range vs {
			vi.sure = vi.copies == len(vi.acks)
		}
	}
}

func (c *checker) value(pt part, v string) *valueInfo {
	vs := c.values[pt]
	if vs == nil {
		vs = map[string]*valueInfo{}
		c.values[pt] = vs
	}
	vi := vs[v]
	if vi == nil {
		vi = &valueInfo{}
		vs[v] = vi
	}
	return vi
}

// observe records that source showed value v at offset o.
func (c *checker) observe(pt part, o int64, v, source string) {
	byOff := c.atOffset[pt]
	if byOff == nil {
		byOff = newIndex[int64, string]()
		c.atOffset[pt] = byOff
		c.offsetsOf[pt] = newIndex[string, int64]()
	}
	byOff.add(o, v, source)
	c.offsetsOf[pt].add(v, o, source)
}

// index maps keys to the values seen with them and the first source that
// showed each, compactly: nearly every key has one value.
type index[K, V comparable] struct {
	first map[K]sighting[V]
	more  map[K]map[V]string // the keys seen with several values: each, and its first source
}

type sighting[V any] struct {
	v      V
	source string
}

func newIndex[K, V comparable]() *index[K, V] {
	return &index[K, V]{first: map[K]sighting[V]{}, more: map[K]map[V]string{}}
}

func (x *index[K, V]) add(k K, v V, source string) {
	f, ok := x.first[k]
	switch {
	case !ok:
		x.first[k] = sighting[V]{v, source}
		return
	case f.v == v:
		return
	}
	m := x.more[k]
	if m == nil {
		m = map[V]string{f.v: f.source}
		x.more[k] = m
	}
	if _, ok := m[v]; !ok {
		m[v] = source
	}
}

// source checks one log or delivery stream on its own (offsets increase
// one by one, no value more often than published, nothing unpublished or
// refused) and records what it shows for the checks across sources.
// jumps (a delivery stream's, by From) are where it may skip.
func (c *checker) source(pt part, name string, recs []Record, jumps map[int64]int64) {
	count := make(map[string]int, len(recs))
	var order []string // the values in the order first held
	if _, ok := jumps[0]; ok && len(recs) > 0 {
		// It jumped before its first delivery: it began at offset 0, and
		// must go on where its jumps lead.
		c.sequence(pt, name, Record{Offset: -1}, recs[0], jumps)
	}
	for i, r := range recs {
		if i > 0 {
			c.sequence(pt, name, recs[i-1], r, jumps)
		}
		if count[r.Value]++; count[r.Value] == 1 {
			order = append(order, r.Value)
		}
		c.observe(pt, r.Offset, r.Value, name)
	}
	for _, v := range order {
		c.stored(pt, name, v, count[v])
	}
}

// sequence checks that r follows prev in a log or a delivery stream,
// which may skip only along its jumps.
func (c *checker) sequence(pt part, name string, prev, r Record, jumps map[int64]int64) {
	next := prev.Offset + 1
	if r.Offset > next && jumps != nil {
		to := follow(jumps, next)
		switch {
		case to == r.Offset:
			c.res.Stats.JumpsTaken++
			return
		case to > r.Offset:
			c.add(OutOfOrder, pt, r.Offset, r.Value, "%s has offset %d (%q) after offset %d (%q) and a jump to the start %d",
				name, r.Offset, r.Value, prev.Offset, prev.Value, to)
			return
		case to > next:
			c.add(Gap, pt, to, "", "%s skips offsets %d..%d (from %q to %q) after jumping from %d to the start %d",
				name, to, r.Offset-1, prev.Value, r.Value, next, to)
			return
		}
	}
	switch {
	case r.Offset == prev.Offset && r.Value == prev.Value:
		c.add(Duplicate, pt, r.Offset, r.Value, name+" holds offset %d twice", r.Offset)
	case r.Offset <= prev.Offset:
		c.add(OutOfOrder, pt, r.Offset, r.Value, "%s has offset %d (%q) after offset %d (%q)",
			name, r.Offset, r.Value, prev.Offset, prev.Value)
	case r.Offset > prev.Offset+1:
		c.add(Gap, pt, prev.Offset+1, "", "%s skips offsets %d..%d (from %q to %q)",
			name, prev.Offset+1, r.Offset-1, prev.Value, r.Value)
	}
}

// stored checks that value v, held n times by source, was published at
// least n times.
func (c *checker) stored(pt part, name, v string, n int) {
	vi := c.value(pt, v)
	vi.seen = true
	switch {
	case vi.copies == 0 && vi.failed > 0:
		if !c.once(FailedStored, pt, v) {
			c.add(FailedStored, pt, -1, v, "%s holds it, but its %d publish attempt(s) were refused for certain",
				name, vi.failed)
		}
	case vi.copies == 0:
		if !c.once(Phantom, pt, v) {
			c.add(Phantom, pt, -1, v, "%s holds it, but nobody published it", name)
		}
	case n > vi.copies:
		c.add(Duplicate, pt, -1, v, "%s holds it %d times, but it was published %d time(s) that could store it",
			name, n, vi.copies)
	}
}

func (c *checker) once(k Kind, pt part, v string) bool {
	key := fmt.Sprint(k, pt, v)
	if c.reported[key] {
		return true
	}
	c.reported[key] = true
	return false
}

// follow returns where a stream that wants offset from ends up after
// its jumps: each moves it on from the offset it wanted to a start.
func follow(jumps map[int64]int64, from int64) int64 {
	for {
		to, ok := jumps[from]
		if !ok || to <= from {
			return from
		}
		from = to
	}
}

// deliveries checks each consumer's stream of each partition as a source,
// with its jumps.
func (c *checker) deliveries(ds []Delivery, js []Jump) {
	type stream struct {
		consumer string
		pt       part
	}
	jumps := map[stream]map[int64]int64{}
	for _, j := range js {
		s := stream{j.Consumer, part{j.Topic, j.Partition}}
		if jumps[s] == nil {
			jumps[s] = map[int64]int64{}
		}
		jumps[s][j.From] = j.To
	}
	c.res.Stats.Jumps = len(js)
	streams := map[stream][]Record{}
	var order []stream
	for _, d := range ds {
		s := stream{d.Consumer, part{d.Topic, d.Partition}}
		if _, ok := streams[s]; !ok {
			order = append(order, s)
		}
		streams[s] = append(streams[s], Record{d.Offset, d.Value})
	}
	c.res.Stats.Deliveries, c.res.Stats.Streams = len(ds), len(order)
	for _, s := range order {
		c.source(s.pt, "consumer "+s.consumer, streams[s], jumps[s])
	}
}

// conflicts reports the offsets that hold more than one value anywhere.
func (c *checker) conflicts() {
	for _, pt := range sortedParts(c.atOffset) {
		more := c.atOffset[pt].more
		for _, o := range slices.Sorted(maps.Keys(more)) {
			c.add(Conflict, pt, o, "", "different values at one offset: %s", describe(more[o]))
		}
	}
}

// reordered reports the values seen at more offsets than they were
// published times: somewhere the partition's order is not the same as
// elsewhere.
func (c *checker) reordered() {
	for _, pt := range sortedParts(c.offsetsOf) {
		more := c.offsetsOf[pt].more
		for _, v := range slices.Sorted(maps.Keys(more)) {
			if len(more[v]) > max(c.value(pt, v).copies, 1) {
				c.add(Reordered, pt, -1, v, "at different offsets: %s", describe(more[v]))
			}
		}
	}
}

// lostAcks checks that a final read holds every acknowledged message of
// its partition at the offset of its ack, from where it starts (its
// start, or its first record if that is before) on; and that it had at
// least one to check.
func (c *checker) lostAcks(r *Read) {
	pt := part{r.Topic, r.Partition}
	from := r.Start
	if len(r.Records) > 0 {
		from = min(from, r.Records[0].Offset)
	}
	checked := 0
	at := make(map[int64]string, len(r.Records))
	for _, rec := range r.Records {
		at[rec.Offset] = rec.Value
	}
	end := from
	if n := len(r.Records); n > 0 {
		end = r.Records[n-1].Offset + 1
	}
	var where map[string]int64 // built at the first loss
	for _, p := range c.acks[pt] {
		if p.Offset < from {
			c.res.Stats.AckRetained++
			continue
		}
		c.res.Stats.AckChecks++
		checked++
		got, ok := at[p.Offset]
		if ok && got == p.Value {
			continue
		}
		detail := fmt.Sprintf("acked to producer %d by node %d, but %s", p.Producer, p.Node, r.Source)
		switch {
		case !ok && p.Offset >= end:
			detail += fmt.Sprintf(" ends at offset %d", end)
		case !ok:
			detail += " lacks the offset"
		default:
			detail += fmt.Sprintf(" holds %q there", got)
		}
		if where == nil {
			where = make(map[string]int64, len(r.Records))
			for _, rec := range r.Records {
				where[rec.Value] = rec.Offset
			}
		}
		if o, found := where[p.Value]; found {
			detail += fmt.Sprintf(" (it holds the value at offset %d)", o)
		}
		c.add(LostAck, pt, p.Offset, p.Value, "%s", detail)
	}
	switch {
	case checked > 0:
	case len(c.acks[pt]) == 0:
		c.add(Unchecked, pt, -1, "", "%s: no message of the partition was acknowledged", r.Source)
	default:
		c.add(Unchecked, pt, from, "", "%s: all %d acknowledged messages are below its start", r.Source, len(c.acks[pt]))
	}
}

func (c *checker) uncertainStored() {
	for _, vs := range c.values {
		for _, vi := range vs {
			if vi.seen && !vi.sure && vi.copies > 0 {
				c.res.Stats.UncertainStored++
			}
		}
	}
}

// groupOffsets checks that no read of a group's committed offset returns
// less than a commit acknowledged, or a read answered, before it began.
func (c *checker) groupOffsets(obs []GroupOffset) {
	c.res.Stats.GroupOffsets = len(obs)
	type key struct {
		group string
		pt    part
	}
	byKey := map[key][]GroupOffset{}
	for _, o := range obs {
		k := key{o.Group, part{o.Topic, o.Partition}}
		byKey[k] = append(byKey[k], o)
	}
	for _, k := range slices.SortedFunc(maps.Keys(byKey), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmpPart(a.pt, b.pt))
	}) {
		c.groupMonotonic(k.group, k.pt, byKey[k])
	}
}

func (c *checker) groupMonotonic(group string, pt part, obs []GroupOffset) {
	byEnd := slices.SortedFunc(slices.Values(obs), func(a, b GroupOffset) int { return cmp.Compare(a.End, b.End) })
	reads := slices.DeleteFunc(slices.Clone(obs), func(o GroupOffset) bool { return o.Commit })
	slices.SortStableFunc(reads, func(a, b GroupOffset) int { return cmp.Compare(a.Start, b.Start) })
	var floor GroupOffset
	haveFloor, next := false, 0
	for _, r := range reads {
		for next < len(byEnd) && byEnd[next].End < r.Start {
			if !haveFloor || byEnd[next].Offset > floor.Offset {
				floor, haveFloor = byEnd[next], true
			}
			next++
		}
		if haveFloor && r.Offset < floor.Offset {
			what := "a read"
			if floor.Commit {
				what = "a commit"
			}
			c.add(OffsetBackwards, pt, r.Offset, "", "group %s: a read at %d returned %d, below %s of %d that ended at %d",
				group, r.Start, r.Offset, what, floor.Offset, floor.End)
		}
	}
}

func (c *checker) add(k Kind, pt part, o int64, v, format string, args ...any) {
	c.res.Violations = append(c.res.Violations, Violation{Kind: k, Topic: pt.topic, Partition: pt.p,
		Offset: o, Value: v, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) finish() {
	slices.SortStableFunc(c.res.Violations, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition),
			cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Value, b.Value))
	})
	c.res.byKind = map[Kind]int{}
	for _, v := range c.res.Violations {
		c.res.byKind[v.Kind]++
	}
	parts := map[part]bool{}
	for pt := range c.values {
		parts[pt] = true
	}
	for pt := range c.atOffset {
		parts[pt] = true
	}
	c.res.Stats.Partitions = len(parts)
}

// describe lists "key in source" pairs in key order.
func describe[K cmp.Ordered](m map[K]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%#v in %s", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func cmpPart(a, b part) int { return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.p, b.p)) }

func sortedParts[V any](m map[part]V) []part {
	return slices.SortedFunc(maps.Keys(m), cmpPart)
}
