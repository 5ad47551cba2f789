package server

import (
	"crypto/x509"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"

	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// transport is a session's view of its connection: what a session needs to
// write frames and close. The gnet listener implements it today; a TLS or
// WebSocket listener would implement it the same way and reuse the session.
// Every method except ScheduleFlush is called on the transport's own
// goroutine (for gnet, the connection's event loop).
type transport interface {
	// ScheduleFlush gets session.flush called on the transport's goroutine
	// soon. Safe from any goroutine. It is what the shards kick.
	outbox.Flusher
	// writev writes frames in order. Whatever the socket does not take at
	// once, the transport buffers; the slices may be reused on return.
	writev(iov [][]byte) error
	// backlog is how many bytes the transport holds unsent.
	backlog() int
	// close closes the connection after the frames already written.
	close()
	remoteAddr() string
	// handshaken tells the transport that the client's Hello succeeded,
	// which ends the handshake timeout and admission accounting.
	handshaken()
	// onLoop runs fn on the transport's goroutine, then goes on reading
	// the frames already received, as after a read (fn reports whether to
	// close the connection). Safe from any goroutine; false when the
	// transport's goroutine is gone (shutdown) and fn will not run.
	onLoop(fn func() (closeConn bool)) bool
	// unsentBytes is what backlog last found unsent: safe from any
	// goroutine, for reports and the shutdown's wait.
	unsentBytes() int64
	// goodbye tells the client the broker is going away, written before
	// the connection closes; done runs once it is. False (and done never
	// runs) when the transport's goroutine is gone.
	goodbye(done func()) bool
}

// subscription is one Subscribe a connection made.
type subscription struct {
	topic  *topic.Topic
	parts  []*shard.Partition
	cancel *atomic.Bool // stops its replays, if any
	// corr and notice: the Subscribe's correlation id, and whether it
	// asked to be told when the broker ends it (wire.FlagEndNotice, a
	// subscription to one partition).
	corr   uint32
	notice bool
	// released is set once the subscription stopped counting against its
	// topic's subscribers: by Unsubscribe, the connection's close, or the
	// broker ending it (endSub), whichever comes first. One the broker
	// ended stays in the session's subs until the session next looks
	// (dropEndedSubs).
	released atomic.Bool
}

// release stops the subscription counting against its topic's
// subscribers; only the first call does.
func (sub *subscription) release() {
	if sub.released.CompareAndSwap(false, true) {
		sub.topic.Subscriptions.Add(-1)
	}
}

type subKey struct {
	topic     *topic.Topic
	partition int32
}

// session is the protocol state of one connection: handshake, request
// dispatch, its subscriptions and its outbox. It is transport-agnostic and
// single-threaded: the transport calls it from one goroutine at a time.
type session struct {
	srv        *Server
	t          transport
	out        *outbox.Outbox
	handshaken bool
	version    uint16 // the protocol version picked at Hello: how TopicInfo is encoded
	closed     bool
	parked     bool  // waiting for work off the loop (offLoop) or for memory: no frames are taken
	memPaused  bool  // parked until the inbound total falls (inflight.go)
	held       int64 // inbound bytes counted for this connection's read side (noteInbound)
	// unprocessed is held, for the memory guard; cut is set once the
	// guard chose to cut this connection.
	unprocessed atomic.Int64
	pausedA     atomic.Bool  // memPaused, for the guard
	cutState    atomic.Int32 // cutNone, cutCounted, cutClosed (inflight.go)
	cutBytes    atomic.Int64 // unprocessed when it was cut
	// pending is a parked request's answer (offLoop); closedDone is set
	// once onClose has finished, after which the worker runs pending itself.
	pending    atomic.Pointer[func() bool]
	closedDone atomic.Bool
	closing    bool         // a slow consumer being disconnected: nothing more is written
	dec        frameDecoder // the read side: frames out of the inbound buffer
	subs       map[subKey]*subscription
	members    map[string]*coord.Member // group memberships, by group name
	fetches    connFetches              // outstanding fetches (fetch.go)
	ran        []*shard.Shard           // shards given operations by this read, to run inline
	scratch    []byte                   // response bodies are encoded here, reused
	frameBuf   []byte                   // and framed here, reused
	by         Origin                   // the client, for telemetry events
	info       sessionInfo              // what the admin API shows of it
	auth       authState                // its principal and what it may do (auth.go)
	quota      quotaState               // its tenant's quotas (quota.go)
	throttled  bool                     // over its tenant's publish rate: no frames are taken (quota.go)
	// peerCert is the client's verified certificate on a mutual-TLS
	// connection, nil otherwise (tls.go: tlsIdentity); set before the
	// first frame.
	peerCert *x509.Certificate
}

func newSession(srv *Server, t transport) *session {
	s := &session{srv: srv, t: t, subs: map[subKey]*subscription{}, members: map[string]*coord.Member{},
		by: Origin{Actor: "client", Remote: t.remoteAddr()}}
	s.info.since = time.Now()
	s.out = srv.outbound.budget.NewOutbox(srv.cfg.MaxPendingBytes, srv.cfg.Shards, t)
	s.out.Inflight = srv.mem.inflight
	return s
}

// errClose is returned by a handler when the connection must be closed
// after the error frame it already queued.
var errClose = errors.New("close connection")

// onData handles every complete frame in in (decoded by s.dec). It
// returns whether the connection must be closed.
func (s *session) onData(in inbound) (closeConn bool) {
	maxFrame := uint32(s.srv.cfg.MaxFrameBytes)
	for !s.closed && !s.parked && !s.throttled {
		limit := maxFrame
		if !s.handshaken && s.authOn() {
			limit = min(maxFrame, maxAuthFrame)
		}
		step, f, b, err := s.dec.next(in, limit, s.handshaken)
		switch step {
		case needMore:
			return false
		case badHeader:
			if !s.handshaken && s.tlsOnPlaintext(in) {
				return true
			}
			s.sendErr(0, err)
			if !s.handshaken {
				s.refused(err)
			}
			return true
		case publishStarts:
			if s.srv.mem.inflight.Load() > s.srv.mem.pauseAt {
				s.srv.mem.pause(s)
				return false
			}
			s.dec.startPublish(f.Header)
		case gotPublish:
			if s.publish(b) != nil {
				return true
			}
		case gotFrame:
			err := s.dispatch(f)
			s.dec.consume(in, f)
			if err != nil {
				return true
			}
		}
	}
	return false
}

// dispatch handles one whole frame other than a Publish. f.Body aliases the
// network buffer and is not kept.
func (s *session) dispatch(f wire.Frame) error {
	if !s.handshaken {
		if s.auth.scram != nil {
			if f.Type != wire.TypeAuthContinue {
				err := wire.Errorf(wire.CodeHandshakeRequired, "an authentication exchange is under way: the next frame must be AuthContinue, got "+f.Type.String())
				s.sendErr(f.Corr, err)
				s.refused(err)
				return errClose
			}
			return s.authContinue(f)
		}
		if f.Type != wire.TypeHello {
			err := wire.Errorf(wire.CodeHandshakeRequired, "the first frame must be Hello, got "+f.Type.String())
			s.sendErr(f.Corr, err)
			s.refused(err)
			return errClose
		}
		return s.hello(f)
	}
	switch f.Type {
	case wire.TypePing:
		s.sendFrame(wire.TypePong, f.Corr, nil)
	case wire.TypePong:
	case wire.TypeCreateTopic:
		return s.createTopic(f)
	case wire.TypeDeleteTopic:
		return s.deleteTopic(f)
	case wire.TypeListTopics:
		return s.listTopics(f)
	case wire.TypeInitProducer:
		return s.initProducer(f)
	case wire.TypeDescribeTopic:
		return s.describeTopic(f)
	case wire.TypeAlterTopic:
		return s.alterTopic(f)
	case wire.TypeSubscribe:
		return s.subscribe(f)
	case wire.TypeUnsubscribe:
		return s.unsubscribe(f)
	case wire.TypeFetch:
		return s.fetch(f)
	case wire.TypeJoinGroup:
		return s.joinGroup(f)
	case wire.TypeHeartbeat:
		return s.heartbeat(f)
	case wire.TypeLeaveGroup:
		return s.leaveGroup(f)
	case wire.TypeCommit:
		return s.commit(f)
	case wire.TypeAck:
		return s.ack(f)
	case wire.TypeNack:
		return s.nack(f)
	case wire.TypeListGroups:
		return s.listGroups(f)
	case wire.TypeDescribeGroup:
		return s.describeGroup(f)
	case wire.TypeResetGroup:
		return s.resetGroup(f)
	case wire.TypeHello:
		s.sendErr(f.Corr, wire.Errorf(wire.CodeMalformed, "second Hello on a connection"))
		return errClose
	default:
		s.sendErr(f.Corr, wire.Errorf(wire.CodeUnknownType, f.Type.String()+" is not a client frame"))
		return errClose
	}
	return nil
}

// used notes that sh was given an operation during this read.
func (s *session) used(sh *shard.Shard) {
	if !slices.Contains(s.ran, sh) {
		s.ran = append(s.ran, sh)
	}
}

// runShards runs every shard this read gave operations to, on the calling
// event loop, unless another thread is running it already (see
// shard.RunInline). owner identifies this loop.
func (s *session) runShards(owner any) {
	for i, sh := range s.ran {
		sh.RunInline(owner)
		s.ran[i] = nil
	}
	s.ran = s.ran[:0]
}

// refuse answers a request with an error; the connection stays open.
func (s *session) refuse(corr uint32, err error) error {
	s.sendErr(corr, err)
	return nil
}

// malformed answers a body that does not decode; the stream can no longer
// be trusted, so the connection closes.
func (s *session) malformed(corr uint32, err error) error {
	s.sendErr(corr, err)
	return errClose
}

func (s *session) hello(f wire.Frame) error {
	h, err := wire.DecodeHello(f.Body)
	if err != nil {
		s.refused(err)
		return s.malformed(f.Corr, err)
	}
	v := min(h.MaxVersion, wire.Version)
	if v < h.MinVersion || v < wire.MinVersion {
		err := wire.Errorf(wire.CodeUnsupportedVersion,
			"server speaks "+strconv.Itoa(int(wire.MinVersion))+".."+strconv.Itoa(int(wire.Version)))
		s.sendErr(f.Corr, err)
		s.refused(err)
		return errClose
	}
	if s.authOn() {
		return s.authenticate(f.Corr, v, &h)
	}
	if h.AuthMechanism != "" {
		err := wire.Errorf(wire.CodeAuthFailed, "authentication is not enabled on this broker")
		s.sendErr(f.Corr, err)
		s.srv.emit(telemetry.Event{Kind: telemetry.EventAuth, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
			Action: "hello " + h.AuthMechanism, Target: "broker", Err: err})
		s.refused(err)
		return errClose
	}
	return s.accept(f.Corr, v, h.ClientName, nil)
}

// publish checks a whole Publish frame held in b, rewrites it in place
// into the Deliver frame every subscriber gets, and hands it to the
// partition's shard, which acks it. The session owns b on entry.
func (s *session) publish(b *storage.Buf) error {
	h, _ := wire.ParseHeader(b.B, uint32(len(b.B)))
	v, err := wire.DecodeBatchView(b.B[wire.HeaderSize:])
	if err == nil {
		err = s.checkPublish(v)
	}
	if err == nil {
		err = s.mayPublish(v.Topic)
	}
	if err == nil && s.quota.ts != nil {
		err = s.checkStorage(len(v.Batch))
	}
	if err == nil {
		t := s.lookup(v.Topic)
		if t == nil {
			return s.publishNew(h.Corr, b, v)
		}
		err = s.routePublish(h.Corr, b, v, t)
	}
	if err != nil {
		return s.publishFailed(h.Corr, b, err)
	}
	return nil
}

// checkPublish checks what a publish can be refused for before its topic
// is looked up, so that a refused publish never auto-creates one.
func (s *session) checkPublish(v wire.BatchView) error {
	if s.srv.draining.Load() {
		return ErrShuttingDown
	}
	if bo := s.srv.cfg.BrokerOnly; bo != "" && string(v.Topic) == bo {
		return wire.Errorf(wire.CodeNotAuthorized, "topic "+bo+" is written by the brokers only: "+
			"its records are the consumer groups' committed offsets")
	}
	_, err := wire.CheckBatch(v.Batch, s.srv.cfg.MaxMessageBytes, s.srv.cfg.MaxFrameBytes)
	return err
}

// publishNew publishes to a topic that does not exist yet: once it has
// been auto-created off the loop, or refused.
func (s *session) publishNew(corr uint32, b *storage.Buf, v wire.BatchView) error {
	return s.withTopic(v.Topic, func(t *topic.Topic, err error) error {
		if err == nil {
			err = s.routePublish(corr, b, v, t)
		}
		if err != nil {
			return s.publishFailed(corr, b, err)
		}
		return nil
	})
}

// publishFailed answers a publish that was refused, releasing its batch.
func (s *session) publishFailed(corr uint32, b *storage.Buf, err error) error {
	b.Release()
	if wire.CodeOf(err) == wire.CodeMalformed {
		return s.malformed(corr, err)
	}
	return s.refuse(corr, err)
}

func (s *session) routePublish(corr uint32, b *storage.Buf, v wire.BatchView, t *topic.Topic) error {
	if s.srv.draining.Load() {
		return ErrShuttingDown
	}
	p, err := t.PickPartition(v.Partition)
	if err != nil {
		return err
	}
	wire.SetDeliverHeader(b.B)
	batchOff := wire.HeaderSize + v.BatchOffset
	binary.BigEndian.PutUint32(b.B[batchOff-4:], uint32(p.ID))
	s.used(p.Shard)
	n := int64(len(b.B) - batchOff)
	s.srv.mem.inflight.Add(n) // until the shard answers it
	if err := p.Publish(s.out, corr, b, batchOff); err != nil {
		s.srv.mem.inflight.Done(n)
		return ErrShuttingDown
	}
	if s.quota.ts != nil {
		s.charge(int(n), v.Batch.Count())
	}
	return nil
}

func (s *session) createTopic(f wire.Frame) error {
	req, err := wire.DecodeCreateTopic(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	name, err := s.qualify(req.Name)
	if err == nil {
		err = s.may(auth.ResTopic, req.Name, auth.OpCreate)
	}
	var kvs []wire.KV
	if err == nil {
		kvs, err = s.qualifyConfig(req.Config)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	corr, by := f.Corr, s.by
	s.offLoop(func() func() error {
		_, err := s.srv.b.CreateTopic(by, name, req.Partitions, kvs, false)
		return func() error { s.reply(corr, err); return nil }
	})
	return nil
}

func (s *session) deleteTopic(f wire.Frame) error {
	name, err := wire.DecodeName(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	n, err := s.qualify(string(name))
	if err == nil {
		err = s.may(auth.ResTopic, string(name), auth.OpDelete)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	corr, by := f.Corr, s.by
	s.offLoop(func() func() error {
		err := s.srv.b.DeleteTopic(by, n)
		return func() error { s.reply(corr, err); return nil }
	})
	return nil
}

// alterTopic changes a topic's runtime config and answers with its new
// description.
func (s *session) alterTopic(f wire.Frame) error {
	req, err := wire.DecodeCreateTopic(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	if req.Partitions != 0 {
		return s.refuse(f.Corr, invalid("the partition count of a topic cannot be changed"))
	}
	name, err := s.qualify(req.Name)
	if err == nil {
		err = s.may(auth.ResTopic, req.Name, auth.OpAlter)
	}
	var kvs []wire.KV
	if err == nil {
		kvs, err = s.qualifyConfig(req.Config)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	corr, by, flags := f.Corr, s.by, f.Flags
	s.offLoop(func() func() error {
		t, err := s.srv.b.UpdateTopic(by, name, kvs)
		return func() error {
			if err != nil {
				return s.refuse(corr, err)
			}
			s.sendTopicInfo(corr, flags, t)
			return nil
		}
	})
	return nil
}

// sendTopicInfo answers with t's description; flags are the request's.
func (s *session) sendTopicInfo(corr uint32, flags uint8, t *topic.Topic) {
	info := topic.Describe(t, flags&wire.FlagDefaults != 0)
	stripInfo(&info)
	s.sendFrame(wire.TypeTopicInfo, corr, info.Append(s.scratch[:0], s.version))
}

func (s *session) listTopics(f wire.Frame) error {
	if len(f.Body) != 0 {
		return s.malformed(f.Corr, wire.Errorf(wire.CodeMalformed, "ListTopics has no body"))
	}
	topics := s.srv.topics.List()
	sums := make([]wire.TopicSummary, 0, len(topics))
	for _, t := range topics {
		if !s.mine(t.Name) {
			continue // another tenant's
		}
		name := wire.Unqualified(t.Name)
		if s.auth.principal != nil && !s.srv.cfg.Auth.Store.Authorize(s.auth.principal, auth.ResTopic, name, auth.OpDescribe) {
			continue // what a principal may not describe, it does not see
		}
		sums = append(sums, wire.TopicSummary{Name: name, Partitions: uint32(len(t.Parts))})
	}
	s.sendFrame(wire.TypeTopicList, f.Corr, wire.AppendTopicList(s.scratch[:0], sums))
	return nil
}

func (s *session) describeTopic(f wire.Frame) error {
	name, err := wire.DecodeName(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	if err := s.may(auth.ResTopic, string(name), auth.OpDescribe); err != nil {
		return s.refuse(f.Corr, err)
	}
	corr, flags := f.Corr, f.Flags
	answer := func(t *topic.Topic, err error) error {
		if err != nil {
			return s.refuse(corr, err)
		}
		s.sendTopicInfo(corr, flags, t)
		return nil
	}
	if f.Flags&wire.FlagAutoCreate != 0 {
		return s.withTopic(name, answer)
	}
	t := s.lookup(name)
	if t == nil {
		return answer(nil, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(string(name))))
	}
	return answer(t, nil)
}

func (s *session) subscribe(f wire.Frame) error {
	name, part, start, resume, err := wire.DecodeSubscribeResume(f.Body)
	if err == nil && len(resume) > 0 && s.version < 3 {
		err = wire.Errorf(wire.CodeMalformed, "resume offsets need protocol version 3")
	}
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	if err := s.may(auth.ResTopic, string(name), auth.OpSubscribe); err != nil {
		return s.refuse(f.Corr, err)
	}
	corr, notice := f.Corr, f.Flags&wire.FlagEndNotice != 0 && part != wire.PartitionAny
	return s.withTopic(name, func(t *topic.Topic, err error) error {
		if err == nil {
			err = checkResume(t, part, resume)
		}
		if err == nil {
			err = s.checkNewSubscription(t, part)
		}
		if err != nil {
			return s.refuse(corr, err)
		}
		return s.subscribeTo(corr, notice, t, part, start, resume)
	})
}

// checkResume refuses resume offsets for partitions the subscription
// does not cover, or named twice.
func checkResume(t *topic.Topic, part int32, resume []wire.PartitionStart) error {
	seen := make(map[int32]bool, len(resume))
	for _, r := range resume {
		if r.Partition < 0 || int(r.Partition) >= len(t.Parts) || (part != wire.PartitionAny && r.Partition != part) {
			return invalid("resume offset for partition " + strconv.Itoa(int(r.Partition)) + ", which the subscription does not cover")
		}
		if seen[r.Partition] {
			return invalid("two resume offsets for partition " + strconv.Itoa(int(r.Partition)))
		}
		seen[r.Partition] = true
	}
	return nil
}

// subscribeTo subscribes to part of t (or every partition) from start,
// or, for the partitions resume names, from their own offsets.
func (s *session) subscribeTo(corr uint32, notice bool, t *topic.Topic, part int32, start wire.Start, resume []wire.PartitionStart) error {
	// Every partition means every partition that is not offline: those
	// hold nothing and take nothing until a restart.
	sub := &subscription{topic: t, parts: t.Online, cancel: new(atomic.Bool), corr: corr, notice: notice}
	if part != wire.PartitionAny {
		sub.parts = t.Parts[part : part+1]
	}
	// From version 3 on, a LATEST subscription too answers with the offset
	// each partition starts at, before any delivery, so that a client can
	// resume it where it left off: it takes the path of a replay from the
	// end, which switches to live delivery with no gap.
	if start.Kind != wire.StartLatest || s.version >= 3 {
		return s.subscribeFrom(corr, t, part, sub, start, resume)
	}
	s.addSub(subKey{t, part}, sub)
	out := s.out
	ok := wire.SubscribeOK{Partitions: uint32(len(t.Parts))}
	for _, p := range sub.parts {
		ok.Starts = append(ok.Starts, wire.PartitionStart{Partition: p.ID, Offset: -1})
	}
	j := shard.NewJoin(len(sub.parts), func(err error) {
		if err != nil {
			out.SendError(corr, err)
		} else {
			body := ok.Append(nil, s.version)
			out.SendCopy(append(wire.AppendHeader(nil, wire.TypeSubscribeOK, 0, corr, len(body)), body...))
			s.emitSub(telemetry.EventSubscriberJoined, t, part, "subscribe", nil)
		}
		out.Kick()
	})
	for _, p := range sub.parts {
		s.used(p.Shard)
		if err := p.Subscribe(out, j); err != nil {
			return s.refuse(corr, ErrShuttingDown)
		}
	}
	return nil
}

// subscribeFrom starts a subscription that replays each partition's log
// from start (or its resume offset) and then follows the live tail. It
// answers with the offset each partition starts at; records below it in
// the first delivered batch are for the client to skip.
func (s *session) subscribeFrom(corr uint32, t *topic.Topic, part int32, sub *subscription, start wire.Start, resume []wire.PartitionStart) error {
	ok := wire.SubscribeOK{Partitions: uint32(len(t.Parts)), Durable: t.Config().Storage != "memory"}
	for _, p := range sub.parts {
		off, err := resolveStart(p, start)
		if r, ok := resumeAt(p, resume); ok {
			off, err = resolveResume(p, r)
		}
		if err != nil {
			t.Subscriptions.Add(-1)
			return s.refuse(corr, err)
		}
		ok.Starts = append(ok.Starts, wire.PartitionStart{Partition: p.ID, Offset: off})
	}
	s.addSub(subKey{t, part}, sub)
	s.sendFrame(wire.TypeSubscribeOK, corr, ok.Append(s.scratch[:0], s.version))
	s.emitSub(telemetry.EventSubscriberJoined, t, part, "subscribe", nil)
	for i, p := range sub.parts {
		s.srv.startSubReplay(s.out, p, ok.Starts[i].Offset, sub)
	}
	return nil
}

// resumeAt returns p's resume offset, if it has one.
func resumeAt(p *shard.Partition, resume []wire.PartitionStart) (int64, bool) {
	for _, r := range resume {
		if r.Partition == p.ID {
			return r.Offset, true
		}
	}
	return 0, false
}

// resolveResume is where a resume offset starts: moved into the log's
// bounds rather than refused. Below the start, retention took what it
// named (the client counts the difference as missed); above the end, the
// log has less than the client saw (a memory topic's log, or a disk one
// written with fsync never, lost to a restart), and the client gets what
// comes next.
func resolveResume(p *shard.Partition, off int64) (int64, error) {
	if err := topic.CheckOnline(p); err != nil {
		return 0, err
	}
	lo, hi := p.Log.Bounds()
	return min(max(off, lo), hi), nil
}

// fetch answers a pull Fetch on the reader pool.
func (s *session) fetch(f wire.Frame) error {
	req, err := wire.DecodeFetch(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	if err := s.may(auth.ResTopic, req.Topic, auth.OpSubscribe); err != nil {
		return s.refuse(f.Corr, err)
	}
	t := s.lookup([]byte(req.Topic))
	if t == nil {
		return s.refuse(f.Corr, wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(req.Topic)))
	}
	p, err := t.Partition(req.Partition)
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	if err := s.srv.startFetch(&s.fetches, s.out, f.Corr, p, req); err != nil {
		return s.refuse(f.Corr, err)
	}
	return nil
}

// checkNewSubscription enforces one subscription per partition per
// connection and the topic's subscriber limit, which it then counts
// against. An offline partition cannot be subscribed to.
func (s *session) checkNewSubscription(t *topic.Topic, part int32) error {
	if part != wire.PartitionAny {
		p, err := t.PickPartition(part)
		if err == nil {
			err = topic.CheckOnline(p)
		}
		if err != nil {
			return err
		}
	} else if len(t.Online) == 0 {
		return t.AllOffline()
	}
	s.dropEndedSubs()
	for k := range s.subs {
		if k.topic == t && (k.partition == part || k.partition == wire.PartitionAny || part == wire.PartitionAny) {
			return wire.Errorf(wire.CodeAlreadySubscribed, "this connection already subscribes to "+t.Name)
		}
	}
	s.dropEndedMembers()
	for _, m := range s.members {
		if memberOf(m, t) {
			return wire.Errorf(wire.CodeAlreadySubscribed, "this connection consumes "+t.Name+" as a member of group "+m.Group())
		}
	}
	if maxSubs := t.Config().MaxSubscribers; int(t.Subscriptions.Add(1)) > maxSubs {
		t.Subscriptions.Add(-1)
		return wire.Errorf(wire.CodeTooManySubscribers,
			"topic "+t.Name+" has its maximum of "+strconv.Itoa(maxSubs)+" subscribers")
	}
	return nil
}

func (s *session) unsubscribe(f wire.Frame) error {
	name, part, _, err := wire.DecodeSubscribe(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	// Prefer the live topic of that name; a subscription to a deleted
	// incarnation of it is removed only when no live one matches.
	key := subKey{s.lookup(name), part}
	sub := s.subs[key]
	if sub == nil {
		for k, v := range s.subs {
			if q, err := s.qualify(string(name)); err == nil && k.topic.Name == q && k.partition == part {
				key, sub = k, v
				break
			}
		}
	}
	if sub != nil && sub.released.Load() { // the broker ended it (endSub)
		s.dropSub(key, sub)
		sub = nil
	}
	if sub == nil {
		return s.refuse(f.Corr, wire.Errorf(wire.CodeNotSubscribed, "no subscription to "+strconv.Quote(string(name))))
	}
	s.dropSub(key, sub)
	sub.cancel.Store(true)
	sub.release()
	s.emitSub(telemetry.EventSubscriberLeft, sub.topic, key.partition, "unsubscribe", nil)
	corr, out := f.Corr, s.out
	j := shard.NewJoin(len(sub.parts), func(error) {
		out.SendCopy(wire.AppendHeader(nil, wire.TypeOK, 0, corr, 0))
		out.Kick()
	})
	for _, p := range sub.parts {
		s.used(p.Shard)
		if err := p.Unsubscribe(out, j); err != nil {
			return s.refuse(f.Corr, ErrShuttingDown)
		}
	}
	return nil
}

// reply sends OK, or the error.
func (s *session) reply(corr uint32, err error) {
	if err != nil {
		s.sendErr(corr, err)
		return
	}
	s.sendFrame(wire.TypeOK, corr, nil)
}

// sendFrame queues a response. body may be s.scratch, so the frame is
// assembled in a second buffer.
func (s *session) sendFrame(t wire.Type, corr uint32, body []byte) {
	frame := wire.AppendHeader(s.frameBuf[:0], t, 0, corr, len(body))
	frame = append(frame, body...)
	s.out.SendCopy(frame)
	s.frameBuf, s.scratch = frame[:0], body[:0]
}

func (s *session) sendErr(corr uint32, err error) {
	if s.closed {
		return
	}
	var we *wire.Error
	if s.tenant() != "" && errors.As(err, &we) {
		err = wire.Errorf(we.Code, s.unqualifyText(we.Message))
	}
	s.out.SendError(corr, err)
	s.srv.countError(wire.CodeOf(err))
}

// flush writes what the outbox holds. It runs on the transport's goroutine.
func (s *session) flush() {
	if s.closed || s.closing || s.quota.held || s.holdDelivery() {
		return
	}
	p, slow := s.out.Take()
	if slow {
		s.slowConsumer()
		return
	}
	err := s.writePending(p)
	if s.quota.ts != nil {
		s.chargeDelivery(p.IOV)
	}
	s.out.Done(p, s.t.backlog())
	if err != nil {
		s.t.close()
		return
	}
	if d := s.out.TakeResumable(); d != nil {
		s.resume(d)
	}
}

// addSub records a subscription. Its live part may be detached while the
// connection is stuck: the connection resumes it with a replay (resume).
func (s *session) addSub(k subKey, sub *subscription) {
	s.subs[k] = sub
	for _, p := range sub.parts {
		s.out.SetDetachable(p, true)
	}
}

// dropEndedSubs forgets the subscriptions the broker ended (endSub), so
// that the partition can be subscribed to again on this connection.
func (s *session) dropEndedSubs() {
	for k, sub := range s.subs {
		if sub.released.Load() {
			s.dropSub(k, sub)
		}
	}
}

// dropSub forgets a subscription.
func (s *session) dropSub(k subKey, sub *subscription) {
	delete(s.subs, k)
	for _, p := range sub.parts {
		s.out.SetDetachable(p, false)
	}
}

// resume replays, from where it stopped, each partition whose live
// subscription was detached while the connection was stuck and is still
// subscribed; the replay joins the live tail again once it catches up
// (shard.CatchUp), so the subscriber gets everything, in order, with no
// gap while the log holds it.
func (s *session) resume(ds []outbox.Detachment) {
	for _, d := range ds {
		p, _ := d.P.(*shard.Partition) // the shard names its partitions so
		for _, sub := range s.subs {
			if !sub.cancel.Load() && slices.Contains(sub.parts, p) {
				s.srv.resumed.Add(1)
				s.srv.startSubReplay(s.out, p, d.From, sub)
				break
			}
		}
	}
}

// writePending hands the frames to the transport at most MaxIOV slices at a
// time. When the transport already holds a backlog, the frames are first
// merged into large blocks, so the backlog grows by a few big pieces rather
// than one piece per frame (gnet walks its whole backlog list per write).
func (s *session) writePending(p *outbox.Pending) error {
	iov := p.IOV
	if len(iov) == 0 {
		return nil
	}
	if s.t.backlog() > 0 {
		return s.writeMerged(iov)
	}
	for len(iov) > 0 {
		n := min(len(iov), outbox.MaxIOV)
		if err := s.t.writev(iov[:n]); err != nil {
			return err
		}
		iov = iov[n:]
	}
	return nil
}

const mergeBlock = 256 << 10

var mergePool = sync.Pool{New: func() any { b := make([]byte, 0, mergeBlock); return &b }}

func (s *session) writeMerged(iov [][]byte) error {
	bp := mergePool.Get().(*[]byte)
	defer mergePool.Put(bp)
	block := (*bp)[:0]
	for i, b := range iov {
		block = append(block, b...)
		if len(block) >= mergeBlock || i == len(iov)-1 {
			if err := s.t.writev([][]byte{block}); err != nil {
				return err
			}
			block = block[:0]
		}
	}
	*bp = block[:0]
	return nil
}

// slowConsumer disconnects a connection that fell behind its outbound
// limit, after telling it why (best effort: its socket is full).
func (s *session) slowConsumer() {
	s.closing = true
	s.srv.slowConsumers.Add(1)
	why := s.out.SlowReason()
	s.srv.outbound.cuts[why].Add(1)
	reason := s.srv.cfg.slowReason(why)
	s.srv.log.Warn("slow consumer disconnected", "remote", s.t.remoteAddr(), "reason", reason)
	for k := range s.subs {
		s.emitSub(telemetry.EventSubscriberFailed, k.topic, k.partition, "slow-consumer", errors.New(reason))
	}
	body := wire.AppendError(nil, wire.CodeSlowConsumer, reason)
	_ = s.t.writev([][]byte{append(wire.AppendHeader(nil, wire.TypeError, 0, 0, len(body)), body...)})
	s.t.close()
}

// emitSub emits a subscriber event about this session's subscription to
// part of t. It may run on a shard goroutine: it reads only what never
// changes.
func (s *session) emitSub(kind telemetry.EventKind, t *topic.Topic, part int32, action string, err error) {
	if !s.srv.observed() {
		return
	}
	p := -1
	if part != wire.PartitionAny {
		p = int(part)
	}
	s.srv.emit(telemetry.Event{Kind: kind, Topic: t.Name, Partition: p, Actor: s.by.Actor, Remote: s.by.Remote,
		Action: action, Target: "topic/" + t.Name, Err: err})
}

// refused reports a connection turned away at its handshake.
func (s *session) refused(err error) {
	s.srv.emit(telemetry.Event{Kind: telemetry.EventConnRefused, Partition: -1, Actor: s.by.Actor, Remote: s.by.Remote,
		Action: "handshake", Err: err})
}

// onClose releases the session's state: its queued frames, its waiting
// fetches and its subscriptions on every shard.
func (s *session) onClose() {
	if s.closed {
		return
	}
	s.closed = true
	s.releaseTenant()
	if s.auth.expiry != nil {
		s.auth.expiry.Stop()
	}
	if s.auth.denied != nil {
		s.reportDenials()
	}
	s.scratch, s.frameBuf = nil, nil // what may still point at the session keeps no buffers alive
	s.out.Close()
	s.fetches.close()
	s.dec.release()
	s.srv.mem.unpause(s)
	s.noteInbound(0)
	s.srv.mem.closedForCut(s)
	for k, sub := range s.subs {
		sub.cancel.Store(true)
		sub.release()
		for _, p := range sub.parts {
			p.Forget(s.out)
		}
		s.dropSub(k, sub)
		if !s.closing { // a slow consumer's subscriptions were reported failed
			s.emitSub(telemetry.EventSubscriberLeft, k.topic, k.partition, "disconnect", nil)
		}
	}
	for name, m := range s.members {
		s.srv.groups.Leave(m)
		delete(s.members, name)
	}
	// A request parked off the loop gets its answer run here, unless its
	// work is still running: then the worker runs it, seeing closedDone.
	s.runPending()
	s.closedDone.Store(true)
	s.runPending()
}

// sessionInfo is what the admin API reads of a session from other
// goroutines: set on the session's event loop, read with atomics.
type sessionInfo struct {
	since  time.Time // immutable
	via    string    // immutable: the gateway an in-process connection serves (local.go); "" for the native listeners
	name   atomic.Pointer[string]
	subs   atomic.Int32
	groups atomic.Int32
}

// noteCounts publishes the session's subscription and membership counts;
// its event loop calls it after each read.
func (s *session) noteCounts() {
	s.info.subs.Store(int32(len(s.subs)))
	s.info.groups.Store(int32(len(s.members)))
}
