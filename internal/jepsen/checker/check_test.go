package checker

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

const topic = "t"

func acked(v string, off int64) Publish {
	return Publish{Producer: 1, Topic: topic, Value: v, Outcome: Acked, Offset: off, Node: 1}
}

func with(o Outcome, v string) Publish {
	return Publish{Producer: 2, Topic: topic, Value: v, Outcome: o}
}

// log builds records at offsets from, from+1, ...
func log(from int64, values ...string) []Record {
	recs := make([]Record, len(values))
	for i, v := range values {
		recs[i] = Record{Offset: from + int64(i), Value: v}
	}
	return recs
}

func final(src string, recs []Record) Read {
	return Read{Source: src, Topic: topic, Records: recs, Final: true}
}

func stream(consumer string, recs []Record) []Delivery {
	ds := make([]Delivery, len(recs))
	for i, r := range recs {
		ds[i] = Delivery{Consumer: consumer, Topic: topic, Offset: r.Offset, Value: r.Value}
	}
	return ds
}

// kinds counts a result's violations by kind.
func kinds(r Result) map[Kind]int {
	m := map[Kind]int{}
	for _, k := range Kinds() {
		if n := r.Count(k); n > 0 {
			m[k] = n
		}
	}
	return m
}

// fine is a legal history: acks in place everywhere; an unknown publish
// stored, another not; a pending one stored; a refused one absent; a
// NOT_LEADER "may have been stored" one stored; consumers that started
// late; one value published twice (a retry) stored twice; group offsets
// that only move forward, with a read concurrent with a commit seeing
// the old offset.
func fine() *History {
	logv := log(0, "a", "u1", "b", "p1", "r", "c", "r")
	return &History{
		Publishes: []Publish{
			acked("a", 0), with(Unknown, "u1"), acked("b", 2), with(Pending, "p1"),
			with(Unknown, "r"), with(Unknown, "r"), acked("c", 5),
			with(Unknown, "u2"), with(Failed, "f1"), with(Pending, "p2"),
		},
		Reads: []Read{
			final("node 1", logv), final("node 2", logv), final("node 3", logv),
			final("leader fetch", logv),
			// A snapshot taken mid-run, behind: not final.
			{Source: "early read", Topic: topic, Records: log(0, "a", "u1")},
		},
		Deliveries: append(stream("c1", log(0, "a", "u1", "b")), stream("c2", log(2, "b", "p1", "r", "c"))...),
		GroupOffsets: []GroupOffset{
			{Group: "g", Topic: topic, Offset: 3, Commit: true, Start: 0, End: 10},
			{Group: "g", Topic: topic, Offset: 0, Start: 5, End: 12}, // concurrent with the commit
			{Group: "g", Topic: topic, Offset: 3, Start: 11, End: 13},
			{Group: "g", Topic: topic, Offset: 6, Commit: true, Start: 14, End: 20},
			{Group: "g", Topic: topic, Offset: 6, Start: 21, End: 22},
		},
	}
}

func TestFineHistory(t *testing.T) {
	r := Check(fine())
	require.True(t, r.OK(), "%v", r.Violations)
	require.Equal(t, Stats{Publishes: 10, Acked: 3, Failed: 1, Unknown: 4, Pending: 2, UncertainStored: 3,
		Reads: 5, FinalReads: 4, Records: 30, Deliveries: 7, Streams: 2, GroupOffsets: 5, Partitions: 1,
		AckChecks: 12}, r.Stats)
}

// TestViolations feeds histories that each break one property (the fine
// one, changed) and checks that exactly the expected violations come out.
func TestViolations(t *testing.T) {
	cases := []struct {
		name   string
		change func(h *History)
		want   map[Kind]int
	}{
		{"lost ack: a replica ends before an acked offset", func(h *History) {
			h.Reads[1].Records = h.Reads[1].Records[:5]
		}, map[Kind]int{LostAck: 1}},
		{"lost ack: a behind replica in a read not final is legal", func(h *History) {
			h.Reads[1].Records = h.Reads[1].Records[:5]
			h.Reads[1].Final = false
		}, map[Kind]int{}},
		{"lost ack: overwritten by an unknown publish", func(h *History) {
			h.Reads[2].Records = log(0, "u2", "u1", "b", "p1", "r", "c", "r")
		}, map[Kind]int{LostAck: 1, Conflict: 1}},
		{"two values at one offset on two replicas", func(h *History) {
			h.Reads[2].Records = log(0, "a", "u2", "b", "p1", "r", "c", "r")
		}, map[Kind]int{Conflict: 1}},
		{"two values at one offset in deliveries", func(h *History) {
			h.Deliveries[4].Value = "p2" // c2 got p2 at offset 3, which holds p1
		}, map[Kind]int{Conflict: 1}},
		{"different order across replicas", func(h *History) {
			h.Reads[0].Records = log(0, "a", "p1", "b", "u1", "r", "c", "r")
		}, map[Kind]int{Conflict: 2, Reordered: 2}},
		{"acked message at another offset", func(h *History) {
			h.Publishes[2].Offset = 3
		}, map[Kind]int{LostAck: 4, Conflict: 1, Reordered: 1}},
		{"duplicate in a replica's log", func(h *History) {
			h.Reads[0].Records = append(h.Reads[0].Records, Record{Offset: 7, Value: "u1"})
		}, map[Kind]int{Duplicate: 1, Reordered: 1}},
		{"duplicate delivery of one offset", func(h *History) {
			h.Deliveries = append(h.Deliveries, Delivery{Consumer: "c1", Topic: topic, Offset: 2, Value: "b"})
		}, map[Kind]int{Duplicate: 2}},
		{"a retried value held three times", func(h *History) {
			h.Reads[3].Records = append(h.Reads[3].Records, Record{Offset: 7, Value: "r"})
		}, map[Kind]int{Duplicate: 1, Reordered: 1}},
		{"delivery out of order", func(h *History) {
			h.Deliveries = append(stream("c3", log(0, "a")), stream("c3", log(2, "b"))...)
			h.Deliveries = append(h.Deliveries, Delivery{Consumer: "c3", Topic: topic, Offset: 1, Value: "u1"})
		}, map[Kind]int{Gap: 1, OutOfOrder: 1}},
		{"gap in a replica's log", func(h *History) {
			h.Reads[4].Records = []Record{{0, "a"}, {2, "b"}}
		}, map[Kind]int{Gap: 1}},
		{"refused publish stored", func(h *History) {
			for i := range 4 {
				h.Reads[i].Records = append(h.Reads[i].Records, Record{Offset: 7, Value: "f1"})
			}
		}, map[Kind]int{FailedStored: 1}},
		{"phantom value", func(h *History) {
			h.Deliveries = append(h.Deliveries, Delivery{Consumer: "c2", Topic: topic, Offset: 6, Value: "zz"})
		}, map[Kind]int{Phantom: 1, Conflict: 1}},
		{"group offset behind an acknowledged commit", func(h *History) {
			h.GroupOffsets[4].Offset = 3
		}, map[Kind]int{OffsetBackwards: 1}},
		{"group offset behind an earlier read", func(h *History) {
			h.GroupOffsets = append(h.GroupOffsets, GroupOffset{Group: "g", Topic: topic, Offset: 5, Start: 23, End: 24})
		}, map[Kind]int{OffsetBackwards: 1}},
		{"another group's offsets are its own", func(h *History) {
			h.GroupOffsets = append(h.GroupOffsets, GroupOffset{Group: "g2", Topic: topic, Offset: 0, Start: 23, End: 24})
		}, map[Kind]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := fine()
			tc.change(h)
			r := Check(h)
			require.Equal(t, tc.want, kinds(r), "%v", r.Violations)
		})
	}
}

// retained is a legal history of a topic with retention: acks at 0..9;
// final reads of logs that start at 4, 6 and 5 (each replica removes its
// own segments) and a leader's at 6; consumers that jumped over what
// retention removed, one of them twice in a row, one that started late,
// and one that started after retention had removed offset 0.
func retained() *History {
	h := &History{Publishes: []Publish{with(Unknown, "u"), with(Failed, "f")}}
	var vals []string
	for i := range 10 {
		v := fmt.Sprintf("m%d", i)
		vals = append(vals, v)
		h.Publishes = append(h.Publishes, acked(v, int64(i)))
	}
	from := func(start int64) []Record { return log(start, vals[start:]...) }
	h.Reads = []Read{
		{Source: "node 1", Topic: topic, Start: 4, Records: from(4), Final: true},
		{Source: "node 2", Topic: topic, Start: 6, Records: from(6), Final: true},
		{Source: "node 3", Topic: topic, Start: 5, Records: from(5), Final: true},
		{Source: "leader fetch", Topic: topic, Start: 6, Records: from(6), Final: true},
		{Source: "early read", Topic: topic, Records: log(0, vals[:3]...)},
	}
	h.Deliveries = slices.Concat(stream("c1", log(0, vals[:3]...)), stream("c1", from(5)),
		stream("c2", log(0, vals[0])), stream("c2", from(6)), stream("c3", from(7)), stream("c4", from(8)))
	h.Jumps = []Jump{{Consumer: "c1", Topic: topic, From: 3, To: 5},
		{Consumer: "c2", Topic: topic, From: 1, To: 4}, {Consumer: "c2", Topic: topic, From: 4, To: 6},
		{Consumer: "c4", Topic: topic, From: 0, To: 8}}
	return h
}

func TestRetainedHistory(t *testing.T) {
	r := Check(retained())
	require.True(t, r.OK(), "%v", r.Violations)
	require.Equal(t, Stats{Publishes: 12, Acked: 10, Failed: 1, Unknown: 1, Reads: 5, FinalReads: 4, Records: 22,
		Deliveries: 18, Streams: 4, Partitions: 1, AckChecks: 19, AckRetained: 21, Jumps: 4, JumpsTaken: 3}, r.Stats)
}

// TestRetainedViolations: retention excuses only what is below a read's
// start and the skips of a consumer's jumps; everything else is checked
// as without it.
func TestRetainedViolations(t *testing.T) {
	cases := []struct {
		name   string
		change func(h *History)
		want   map[Kind]int
	}{
		{"an acked message missing above a read's start", func(h *History) {
			h.Reads[0].Records = slices.Delete(h.Reads[0].Records, 2, 3) // offset 6
		}, map[Kind]int{LostAck: 1, Gap: 1}},
		{"a read whose records begin after its start", func(h *History) {
			h.Reads[0].Records = h.Reads[0].Records[1:]
		}, map[Kind]int{LostAck: 1, Gap: 1}},
		{"a final read past its last record", func(h *History) {
			h.Reads[1].Records = h.Reads[1].Records[:2]
		}, map[Kind]int{LostAck: 2}},
		{"a gap inside a read that is not final", func(h *History) {
			h.Reads[4] = Read{Source: "mid-run read", Topic: topic, Start: 5, Records: []Record{{5, "m5"}, {7, "m7"}}}
		}, map[Kind]int{Gap: 1}},
		{"another value above the start", func(h *History) {
			h.Reads[2].Records[2].Value = "u" // offset 7
		}, map[Kind]int{LostAck: 1, Conflict: 1}},
		{"a record below the start is checked where held", func(h *History) {
			h.Reads[0].Records = append([]Record{{3, "m2"}}, h.Reads[0].Records...)
		}, map[Kind]int{LostAck: 1, Conflict: 1, Reordered: 1}},
		{"a refused publish below another read's start", func(h *History) {
			h.Reads[0].Records = append([]Record{{3, "f"}}, h.Reads[0].Records...)
		}, map[Kind]int{LostAck: 1, Conflict: 1, FailedStored: 1}},
		{"a consumer skip with no jump", func(h *History) {
			h.Deliveries = slices.DeleteFunc(h.Deliveries, func(d Delivery) bool { return d.Consumer == "c3" && d.Offset == 8 })
		}, map[Kind]int{Gap: 1}},
		{"a consumer skip past the start it jumped to", func(h *History) {
			h.Deliveries = slices.DeleteFunc(h.Deliveries, func(d Delivery) bool { return d.Consumer == "c1" && d.Offset == 5 })
		}, map[Kind]int{Gap: 1}},
		{"a consumer delivered below the start it jumped to", func(h *History) {
			h.Jumps[0].To = 6
		}, map[Kind]int{OutOfOrder: 1}},
		{"a consumer that jumped from 0 begins past the start", func(h *History) {
			h.Jumps[3].To = 7
		}, map[Kind]int{Gap: 1}},
		{"a consumer that jumped from 0 begins below the start", func(h *History) {
			h.Jumps[3].To = 9
		}, map[Kind]int{OutOfOrder: 1}},
		{"a broken chain of jumps", func(h *History) {
			h.Jumps = h.Jumps[:2]
		}, map[Kind]int{Gap: 1}},
		{"another consumer's jump excuses nothing", func(h *History) {
			h.Jumps[0].Consumer = "c3"
		}, map[Kind]int{Gap: 1}},
		{"another partition's jump excuses nothing", func(h *History) {
			h.Jumps[0].Partition = 1
		}, map[Kind]int{Gap: 1}},
		{"a final read that starts past every ack", func(h *History) {
			h.Reads[3].Start, h.Reads[3].Records = 10, nil
		}, map[Kind]int{Unchecked: 1}},
		{"a final read empty from its start", func(h *History) {
			h.Reads[3].Records = nil
		}, map[Kind]int{LostAck: 4}},
		{"no acknowledged message at all", func(h *History) {
			for i := range h.Publishes {
				if h.Publishes[i].Outcome == Acked {
					h.Publishes[i].Outcome = Unknown
				}
			}
		}, map[Kind]int{Unchecked: 4}},
		{"a read not final need check nothing", func(h *History) {
			h.Reads[4] = Read{Source: "mid-run read", Topic: topic, Start: 10}
		}, map[Kind]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := retained()
			tc.change(h)
			r := Check(h)
			require.Equal(t, tc.want, kinds(r), "%v", r.Violations)
		})
	}
}

// TestPartitionsAreSeparate: the same offsets and values in two
// partitions do not meet.
func TestPartitionsAreSeparate(t *testing.T) {
	h := &History{
		Publishes: []Publish{acked("a", 0), {Topic: topic, Partition: 1, Value: "a", Outcome: Acked}},
		Reads: []Read{final("n1", log(0, "a")),
			{Source: "n1", Topic: topic, Partition: 1, Records: log(0, "a"), Final: true}},
	}
	r := Check(h)
	require.True(t, r.OK(), "%v", r.Violations)
	require.Equal(t, 2, r.Stats.Partitions)
	h.Reads[1].Records = log(0, "b")
	r = Check(h)
	require.Equal(t, map[Kind]int{LostAck: 1, Conflict: 1, Phantom: 1}, kinds(r), "%v", r.Violations)
	require.Equal(t, int32(1), r.Violations[0].Partition)
}

func TestViolationString(t *testing.T) {
	v := Violation{Kind: LostAck, Topic: "orders", Partition: 2, Offset: 7, Value: "x", Detail: "node 3 ends at offset 5"}
	require.Equal(t, `lost-ack orders/2 offset 7 value "x": node 3 ends at offset 5`, v.String())
	v = Violation{Kind: Phantom, Topic: "orders", Offset: -1, Detail: "?"}
	require.Equal(t, `phantom orders/0: ?`, v.String())
	require.Equal(t, "Kind(99)", Kind(99).String())
	require.Equal(t, "unknown", Unknown.String())
}

func TestDescribe(t *testing.T) {
	h := fine()
	h.Reads[0].Records = log(0, "a", "p1", "b", "u1", "r", "c", "r")
	r := Check(h)
	require.Equal(t, `conflict t/0 offset 1: different values at one offset: "p1" in node 1, "u1" in node 2`,
		r.Violations[0].String())
}

// BenchmarkCheck checks a history of a run's size per 100,000 acked
// messages: three replicas and a leader read, and a consumer.
func BenchmarkCheck(b *testing.B) {
	const n = 100_000
	h := &History{}
	recs := make([]Record, n)
	for i := range n {
		v := fmt.Sprintf("w%d-%d", i%12, i)
		h.Publishes = append(h.Publishes, acked(v, int64(i)))
		recs[i] = Record{Offset: int64(i), Value: v}
	}
	for _, src := range []string{"node 1", "node 2", "node 3", "leader"} {
		h.Reads = append(h.Reads, final(src, recs))
	}
	h.Deliveries = stream("c", recs)
	b.ReportAllocs()
	for b.Loop() {
		if r := Check(h); !r.OK() {
			b.Fatal(r.Violations[0])
		}
	}
}
