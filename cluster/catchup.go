package cluster

import (
	"bytes"
	"errors"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Catch-up by whole batches (raftlog/catchup.go has the storage side).
//
// A leader with GroupConfig.CatchUpBytes set tells Raft that its log
// starts that many bytes before what it applied (raftlog.Storage.SetHorizon,
// every tick): a replica further behind is sent a snapshot rather than
// entries. The replica's host does not step that snapshot into Raft at
// once: it first fetches the batches the snapshot stands for from the
// node that sent it, chunk by chunk (fetchChunk requests, answered with
// the batches as they lie in that node's segments), into the partition's
// stage, and steps the snapshot in once the stage holds them all; Raft
// installs it, and the partition log adopts the stage's segments whole.
//
// The requests and chunks ride the transport as raft messages of a type
// raft never sends between nodes (MsgSnapStatus is local to a node), told
// apart by their context; the host answers them and never steps them
// into raft. A request is answered with a run of up to runChunks chunks,
// sent in order on the node pair's connection (all but the last marked
// as followed by more), and the replica asks for the next run when the
// last chunk of one arrives: a round trip per run, not per chunk. A
// request whose run did not finish within an election timeout is asked
// again from where the stage ends, and a chunk that does not start there
// (a duplicate, or one after a lost one) is dropped.
var (
	fetchReqCtx   = []byte("ratatoskr/fetch")
	fetchChunkCtx = []byte("ratatoskr/chunk")
)

// chunkBytes is about how much one chunk carries: well under the
// transport's frame and queue bounds (64 MiB by default), and small
// enough that reading or writing one holds the host's goroutine for a
// millisecond or two.
const chunkBytes = 1 << 20

// runChunks is how many chunks answer one request.
const runChunks = 4

// DefaultCatchUpBytes is the catch-up window the engine gives its
// partitions: a replica more than this far behind its leader fetches the
// batches whole.
const DefaultCatchUpBytes = 16 << 20

// catchUp is a follower's fetch of the batches a snapshot stands for.
type catchUp struct {
	snap     raftpb.Message // the last snapshot message: stepped into raft once the stage is full
	next, to int64          // the stage holds up to next; the snapshot needs up to to
	asked    int64          // the tick the outstanding request went at; -1: none outstanding
	from     int64          // where this fetch started
	bytes    int64          // fetched by it
	began    time.Time
}

// interceptSnap holds back a snapshot message whose batches this replica
// lacks, and starts (or goes on with) fetching them; it reports whether
// the message may be stepped into raft now.
func (h *Host) interceptSnap(g *Group, m raftpb.Message) bool {
	if m.Snapshot == nil {
		return true
	}
	next, to, err := g.store.PrepareInstall(*m.Snapshot)
	if err != nil {
		// Installed without the batches before its offset, as a snapshot
		// past the leader's retention is: the replica serves less history,
		// but its log is whole from the snapshot on.
		h.cfg.Logger.Warn("catch-up: cannot stage the leader's batches", "group", g.cfg.ID, "err", err)
		g.catchUp = nil
		return true
	}
	if next >= to {
		g.catchUp = nil
		return true
	}
	c := g.catchUp
	if c == nil {
		c = &catchUp{asked: -1, from: next, began: time.Now()}
		g.catchUp = c
		h.cfg.Logger.Info("catch-up: fetching the leader's batches whole", "group", g.cfg.ID, "from", m.From,
			"offsets", next, "to", to)
	}
	c.snap, c.next, c.to = m, next, to
	if c.asked < 0 {
		h.askChunk(g)
	}
	return false
}

// askChunk asks the node that sent the snapshot for the next chunk.
func (h *Host) askChunk(g *Group) {
	c := g.catchUp
	c.asked = h.ticks
	h.post(c.snap.From, Envelope{Group: g.cfg.ID, Msg: raftpb.Message{Type: raftpb.MsgSnapStatus,
		From: h.cfg.NodeID, To: c.snap.From, Context: fetchReqCtx, Commit: uint64(c.next), Index: uint64(c.to)}})
}

// catchUpMsg handles a fetch request or a chunk; it reports whether m was
// one (and is not for raft).
func (h *Host) catchUpMsg(g *Group, from uint64, m raftpb.Message) bool {
	switch {
	case m.Type != raftpb.MsgSnapStatus:
		return false
	case bytes.Equal(m.Context, fetchReqCtx):
		h.serveChunk(g, from, m)
	case bytes.Equal(m.Context, fetchChunkCtx):
		h.takeChunk(g, m)
	}
	return true // never stepped: raft takes MsgSnapStatus from its own node only
}

// serveChunk answers a request for the batches from offset m.Commit up to
// m.Index with a run of chunks of them (each with its offset in Commit,
// and LogTerm 1 when more follow), or with a refusal naming where this
// node's log starts when it no longer holds the first. The run is read
// off the host's goroutine (a driven host reads it in place), one run per
// requester at a time: the requester asks again after a timeout.
func (h *Host) serveChunk(g *Group, from uint64, m raftpb.Message) {
	if h.cfg.Driven {
		h.sendRun(g, from, h.readRun(g, from, m))
		return
	}
	if g.serving[from] {
		return
	}
	if g.serving == nil {
		g.serving = map[uint64]bool{}
	}
	g.serving[from] = true
	g.runs.Add(1)
	go func() {
		resps := h.readRun(g, from, m)
		g.runs.Done()
		h.do(func() {
			delete(g.serving, from)
			if h.groups[g.cfg.ID] == g && g.failed == nil {
				h.sendRun(g, from, resps)
			}
		})
	}()
}

// readRun reads the run of chunks a request asks for (serveChunk); nil
// after a read error, logged.
func (h *Host) readRun(g *Group, from uint64, m raftpb.Message) []raftpb.Message {
	var out []raftpb.Message
	at, to := int64(m.Commit), int64(m.Index)
	for i := 0; i < runChunks; i++ {
		resp := raftpb.Message{Type: raftpb.MsgSnapStatus, From: h.cfg.NodeID, To: from, Context: fetchChunkCtx,
			Commit: uint64(at), Index: m.Index}
		chunk, end, err := g.store.ReadRange(at, to, chunkBytes)
		switch {
		case errors.Is(err, raftlog.ErrBeforeStart):
			start, _ := g.store.Log().Bounds()
			resp.Reject, resp.RejectHint = true, uint64(start)
		case err != nil:
			h.cfg.Logger.Warn("catch-up: read for a replica", "group", g.cfg.ID, "to", from, "offset", at, "err", err)
			return out // the rest is asked again after a timeout
		default:
			resp.Entries = []raftpb.Entry{{Data: chunk}}
			at = end
			if len(chunk) > 0 && at < to && i < runChunks-1 {
				resp.LogTerm = 1 // more follow
			}
		}
		out = append(out, resp)
		if resp.LogTerm == 0 {
			break
		}
	}
	return out
}

// sendRun sends a run of chunks read for a requester.
func (h *Host) sendRun(g *Group, from uint64, resps []raftpb.Message) {
	for _, resp := range resps {
		if !resp.Reject {
			g.chunksServed++
		}
		h.post(from, Envelope{Group: g.cfg.ID, Msg: resp})
	}
}

// takeChunk stages a chunk that answers the outstanding request, and asks
// for the next; once the stage holds all the snapshot needs, the snapshot
// goes to raft.
func (h *Host) takeChunk(g *Group, m raftpb.Message) {
	c := g.catchUp
	if c == nil || int64(m.Commit) != c.next {
		return // late, duplicated, or after a lost one
	}
	more := m.LogTerm == 1
	c.asked = -1
	if more {
		c.asked = h.ticks // the run goes on: its end is waited for as the request's answer
	}
	if m.Reject {
		// The batches are gone from that node (its retention): its next
		// snapshot starts later.
		h.cfg.Logger.Info("catch-up: the leader no longer holds the batches; waiting for its next snapshot",
			"group", g.cfg.ID, "offset", c.next, "leader_start", m.RejectHint)
		g.catchUp = nil
		return
	}
	if len(m.Entries) != 1 || len(m.Entries[0].Data) == 0 {
		c.asked = h.ticks // nothing committed there yet: asked again after a timeout
		return
	}
	data := m.Entries[0].Data
	end, err := g.store.Stage(c.next, data)
	if err != nil {
		h.cfg.Logger.Warn("catch-up: stage a chunk", "group", g.cfg.ID, "offset", c.next, "err", err)
		g.catchUp = nil // the leader's next snapshot starts over
		return
	}
	g.fetchedBytes += int64(len(data))
	c.bytes += int64(len(data))
	c.next = end
	if c.next < c.to {
		if !more {
			h.askChunk(g)
		}
		return
	}
	g.catchUp = nil
	h.cfg.Logger.Info("catch-up: fetched the leader's batches; installing the snapshot", "group", g.cfg.ID,
		"offsets", c.from, "to", c.to, "bytes", c.bytes, "took", time.Since(c.began).Round(time.Millisecond))
	if err := g.rn.Step(c.snap); err != nil {
		h.cfg.Logger.Debug("raft step", "group", g.cfg.ID, "err", err)
	}
	h.markReady(g)
}

// replayFetched hands the last batches a snapshot's installation fetched
// (about the catch-up window's worth, at least a chunk) to OnBatch, as if
// they had been committed here: the partition's idempotent-producer table
// learns of the producers' recent batches, and a retry of one is not
// stored again should this replica lead. Of older batches it does not
// hear (docs/CLUSTER.md).
func (h *Host) replayFetched(g *Group) {
	from := g.store.RecentFrom(max(g.cfg.CatchUpBytes, chunkBytes))
	to := g.store.OffsetEnd(g.applied)
	for from < to {
		next := from
		err := g.store.Log().Read(from, chunkBytes, func(b wire.Batch) bool {
			end := b.BaseOffset() + int64(b.Count())
			if end > to {
				return false
			}
			if b.BaseOffset() >= from {
				g.cfg.OnBatch(b.BaseOffset(), b)
			}
			next = end
			return true
		})
		if err != nil || next == from {
			if err != nil {
				h.cfg.Logger.Warn("catch-up: replay the fetched batches", "group", g.cfg.ID, "offset", from, "err", err)
			}
			return
		}
		from = next
	}
}

// retryChunks asks again for the chunks that got no answer within an
// election timeout.
func (h *Host) retryChunks(g *Group) {
	if c := g.catchUp; c != nil && c.asked >= 0 && h.ticks-c.asked > int64(h.cfg.ElectionTicks) {
		h.askChunk(g)
	}
}
