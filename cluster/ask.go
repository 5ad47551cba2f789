package cluster

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
)

// Node requests: a small request from this node to another, answered by
// the other's HostConfig.OnAsk, for what spans nodes but no Raft group
// (a consumer-group list, gathered from every coordinator). They ride the
// node pair's connection as envelopes of no group (as the liveness pings
// do), of type MsgSnapStatus, with a context that says a request or an
// answer and the request's kind, its id in Index and its body as the one
// entry's data. Raft never sees them. A node that does not know the kind
// answers with an empty body; one that knows no node requests (an older
// version) ignores them, and the request fails after its timeout.

var (
	askCtx    = []byte("ratatoskr/ask:")
	answerCtx = []byte("ratatoskr/answer")
)

// ErrAskTimeout says a node request was not answered within two election
// timeouts: the node is down, cut off, or does not know node requests.
var ErrAskTimeout = errors.New("cluster: the node did not answer in time")

// pendingAsk is a node request not answered yet.
type pendingAsk struct {
	at   int64 // the host's tick when it was sent
	done func([]byte, error)
}

// Ask sends a request of the given kind to node to, whose OnAsk answers
// it; done gets the answer's body, or ErrAskTimeout after two election
// timeouts, or ErrStopped. done runs on the host's goroutine, exactly
// once, and must not block. The request and its answer must each fit in a
// transport frame.
func (h *Host) Ask(to uint64, kind string, body []byte, done func([]byte, error)) {
	if !h.do(func() { h.ask(to, kind, body, done) }) {
		done(nil, ErrStopped)
	}
}

func (h *Host) ask(to uint64, kind string, body []byte, done func([]byte, error)) {
	h.askSeq++
	if h.asks == nil {
		h.asks = map[uint64]pendingAsk{}
	}
	h.asks[h.askSeq] = pendingAsk{at: h.ticks, done: done}
	ctx := append(append([]byte(nil), askCtx...), kind...)
	h.post(to, Envelope{Msg: raftpb.Message{Type: raftpb.MsgSnapStatus, From: h.cfg.NodeID, To: to, Context: ctx,
		Index: h.askSeq, Entries: []raftpb.Entry{{Data: body}}}})
}

// nodeMsg handles an envelope of no group other than a ping: a request,
// answered at once, or an answer.
func (h *Host) nodeMsg(from uint64, m raftpb.Message) {
	if m.Type != raftpb.MsgSnapStatus {
		return
	}
	var body []byte
	if len(m.Entries) == 1 {
		body = m.Entries[0].Data
	}
	switch {
	case bytes.HasPrefix(m.Context, askCtx):
		id := m.Index
		answer := func(b []byte) {
			h.post(from, Envelope{Msg: raftpb.Message{Type: raftpb.MsgSnapStatus, From: h.cfg.NodeID, To: from,
				Context: answerCtx, Index: id, Entries: []raftpb.Entry{{Data: b}}}})
		}
		if h.cfg.OnAsk == nil {
			answer(nil)
			return
		}
		var once sync.Once
		h.cfg.OnAsk(from, string(m.Context[len(askCtx):]), body, func(b []byte) {
			once.Do(func() { h.do(func() { answer(b) }) })
		})
	case bytes.Equal(m.Context, answerCtx):
		if p, ok := h.asks[m.Index]; ok {
			delete(h.asks, m.Index)
			p.done(body, nil)
		}
	}
}

// expireAsks fails the node requests sent more than two election
// timeouts ago; every one when stopping (err).
func (h *Host) expireAsks(err error) {
	for _, id := range slices.Sorted(maps.Keys(h.asks)) { // in order: a driven host repeats itself
		p := h.asks[id]
		if err != nil || h.ticks-p.at > int64(2*h.cfg.ElectionTicks) {
			delete(h.asks, id)
			if err == nil {
				p.done(nil, ErrAskTimeout)
			} else {
				p.done(nil, err)
			}
		}
	}
}
