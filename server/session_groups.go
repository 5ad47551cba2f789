package server

import (
	"slices"

	"strconv"

	"github.com/ratatoskr-mq/ratatoskr/auth"

	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Consumer group requests of a session; the coordinator (package
// group/coord) does the work. A membership belongs to the connection that joined: frames
// naming a member of another connection are refused as unknown member.
// The coordinator may end a membership on its own (session timeout, a
// join from another connection taking the id over, the topic deleted);
// the session forgets it when a frame names it, or when a join or a
// subscription checks what the connection consumes.

func (s *session) joinGroup(f wire.Frame) error {
	req, err := wire.DecodeJoinGroup(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	if err := wire.ValidateTopicName(req.Group); err != nil {
		return s.refuse(f.Corr, invalid("group name "+strconv.Quote(req.Group)+": "+err.Error()))
	}
	if s.srv.draining.Load() {
		return s.refuse(f.Corr, ErrShuttingDown)
	}
	if err := s.may(auth.ResGroup, req.Group, auth.OpJoin); err != nil {
		return s.refuse(f.Corr, err)
	}
	if err := s.may(auth.ResTopic, req.Topic, auth.OpSubscribe); err != nil {
		return s.refuse(f.Corr, err)
	}
	s.dropEndedMembers()
	if _, ok := s.members[req.Group]; ok {
		return s.refuse(f.Corr, invalid("this connection is already a member of group "+req.Group))
	}
	corr := f.Corr
	return s.withTopic([]byte(req.Topic), func(t *topic.Topic, err error) error {
		if err != nil {
			return s.refuse(corr, err)
		}
		return s.joinTopic(corr, &req, t)
	})
}

// joinGroup's second half, once the group's topic is known.
func (s *session) joinTopic(corr uint32, req *wire.JoinGroup, t *topic.Topic) error {
	s.dropEndedMembers()
	if _, ok := s.members[req.Group]; ok { // a join that raced with this one while the topic was created
		return s.refuse(corr, invalid("this connection is already a member of group "+req.Group))
	}
	for k := range s.subs {
		if k.topic == t {
			return s.refuse(corr, wire.Errorf(wire.CodeAlreadySubscribed,
				"this connection subscribes to "+t.Name+"; a group member needs a connection of its own for the topic"))
		}
	}
	for _, m := range s.members {
		if memberOf(m, t) {
			return s.refuse(corr, wire.Errorf(wire.CodeAlreadySubscribed,
				"this connection consumes "+t.Name+" as a member of group "+m.Group()))
		}
	}
	q := *req
	q.Group, q.Topic = wire.Qualify(s.tenant(), req.Group), t.Name // the group's name was checked at the join
	if q.DLQ != "" {
		if err := wire.ValidateTopicName(q.DLQ); err != nil {
			return s.refuse(corr, invalid("dead-letter topic "+strconv.Quote(q.DLQ)+": "+err.Error()))
		}
		if err := s.mayDeadLetter(q.DLQ); err != nil {
			return s.refuse(corr, err)
		}
		q.DLQ = wire.Qualify(s.tenant(), q.DLQ)
	}
	// The assignment starts partitions at the committed offsets: a
	// deposed coordinator must not hand out its stale ones.
	return s.confirmed(q.Group, func(err error) error {
		if err != nil {
			return s.refuse(corr, err)
		}
		m, err := s.srv.groups.Join(s.out, s.by.Group(), corr, &q, topic.Group{T: t})
		if err != nil {
			return s.refuse(corr, err)
		}
		s.members[req.Group] = m
		return nil
	})
}

// confirmed runs then once the coordinator confirmed that state of group
// read from now on may be answered from this node (coord.Coordinator.Confirm:
// in a cluster, a Raft ReadIndex of the group's offsets partition), with
// nil or the refusal; on a single broker at once. The session takes no
// frames meanwhile (park), so its answers keep their order. A session
// that closed meanwhile answers nothing.
func (s *session) confirmed(group string, then func(error) error) error {
	if !s.srv.groups.Confirms() {
		return then(nil)
	}
	s.park(func(answer func(func() error)) {
		s.srv.groups.Confirm(group, func(err error) {
			answer(func() error {
				if s.closed {
					return nil
				}
				return then(err)
			})
		})
	})
	return nil
}

// dropEndedMembers forgets the memberships the coordinator has ended, so
// that they hold back neither a new join of their group nor a Subscribe
// or join of their topic.
func (s *session) dropEndedMembers() {
	for name, m := range s.members {
		if m.Err() != nil {
			delete(s.members, name)
		}
	}
}

// member finds the membership a frame names.
func (s *session) member(ref wire.MemberRef) (*coord.Member, error) {
	m := s.members[ref.Group]
	if m == nil || m.ID() != ref.Member {
		return nil, wire.Errorf(wire.CodeUnknownMember, "no member "+strconv.Quote(ref.Member)+
			" of group "+strconv.Quote(ref.Group)+" on this connection")
	}
	if err := m.Err(); err != nil {
		delete(s.members, ref.Group)
		return nil, err
	}
	return m, nil
}

func (s *session) heartbeat(f wire.Frame) error {
	ref, err := wire.DecodeMemberRef(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	m, err := s.member(ref)
	if err == nil {
		err = s.srv.groups.Heartbeat(m, ref.Generation)
	}
	s.reply(f.Corr, err)
	return nil
}

func (s *session) leaveGroup(f wire.Frame) error {
	ref, err := wire.DecodeMemberRef(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	m, err := s.member(ref)
	if err == nil {
		delete(s.members, ref.Group)
		s.srv.groups.Leave(m)
	}
	s.reply(f.Corr, err)
	return nil
}

// later answers a request whose outcome a later goroutine decides.
func (s *session) later(corr uint32) func(error) {
	out := s.out
	return func(err error) { replyTo(out, corr, err) }
}

// replyTo sends OK or an error from any goroutine.
func replyTo(out *outbox.Outbox, corr uint32, err error) {
	if err != nil {
		out.SendError(corr, err)
	} else {
		out.SendCopy(wire.AppendHeader(nil, wire.TypeOK, 0, corr, 0))
	}
	out.Kick()
}

func (s *session) commit(f wire.Frame) error {
	req, err := wire.DecodeCommit(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	m, err := s.member(req.MemberRef)
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	s.srv.groups.Commit(m, &req, s.later(f.Corr))
	return nil
}

func (s *session) ack(f wire.Frame) error {
	req, err := wire.DecodeAck(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	m, err := s.member(req.MemberRef)
	if err == nil {
		err = s.srv.groups.Ack(m, &req)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	return nil
}

func (s *session) nack(f wire.Frame) error {
	req, err := wire.DecodeNack(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	m, err := s.member(req.MemberRef)
	if err == nil {
		err = s.srv.groups.Nack(m, &req)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	return nil
}

func (s *session) listGroups(f wire.Frame) error {
	if len(f.Body) != 0 {
		return s.malformed(f.Corr, wire.Errorf(wire.CodeMalformed, "ListGroups has no body"))
	}
	if !s.srv.groups.Confirms() {
		return s.sendGroups(f.Corr, s.srv.groups.List())
	}
	// A cluster's node lists the groups every coordinator has: the session
	// takes no frames until they answered (park), as for a confirmation.
	corr := f.Corr
	s.park(func(answer func(func() error)) {
		s.srv.groups.ListAll(func(groups []wire.GroupSummary) {
			answer(func() error {
				if s.closed {
					return nil
				}
				return s.sendGroups(corr, groups)
			})
		})
	})
	return nil
}

// sendGroups answers a ListGroups with the groups the client may see, by
// the names it knows them by.
func (s *session) sendGroups(corr uint32, groups []wire.GroupSummary) error {
	groups = slices.DeleteFunc(groups, func(g wire.GroupSummary) bool { return !s.mine(g.Group) })
	for i := range groups {
		groups[i].Group, groups[i].Topic = wire.Unqualified(groups[i].Group), wire.Unqualified(groups[i].Topic)
	}
	if p := s.auth.principal; p != nil {
		groups = slices.DeleteFunc(groups, func(g wire.GroupSummary) bool {
			return !s.srv.cfg.Auth.Store.Authorize(p, auth.ResGroup, g.Group, auth.OpDescribe)
		})
	}
	s.sendFrame(wire.TypeGroupList, corr, wire.AppendGroupList(s.scratch[:0], groups))
	return nil
}

func (s *session) describeGroup(f wire.Frame) error {
	name, err := wire.DecodeName(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	q, err := s.qualify(string(name))
	if err == nil {
		err = s.may(auth.ResGroup, string(name), auth.OpDescribe)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	corr := f.Corr
	return s.confirmed(q, func(err error) error {
		var info wire.GroupInfo
		if err == nil {
			info, err = s.srv.groups.Describe(q)
		}
		if err != nil {
			return s.refuse(corr, err)
		}
		info.Group, info.Topic = wire.Unqualified(info.Group), wire.Unqualified(info.Topic)
		s.sendFrame(wire.TypeGroupInfo, corr, info.Append(s.scratch[:0]))
		return nil
	})
}

// resetGroup moves a group's committed offsets: of every partition, or,
// with FlagResetPartitions, of the listed ones.
func (s *session) resetGroup(f wire.Frame) error {
	if f.Flags&wire.FlagResetPartitions != 0 {
		req, err := wire.DecodeResetPartitions(f.Body)
		if err != nil {
			return s.malformed(f.Corr, err)
		}
		q, err := s.qualify(req.Group)
		if err == nil {
			err = s.may(auth.ResGroup, req.Group, auth.OpAlter)
		}
		if err != nil {
			return s.refuse(f.Corr, err)
		}
		s.srv.groups.ResetPartitions(s.by.Group(), q, req.Partitions, s.later(f.Corr))
		return nil
	}
	req, err := wire.DecodeResetGroup(f.Body)
	if err != nil {
		return s.malformed(f.Corr, err)
	}
	q, err := s.qualify(req.Group)
	if err == nil {
		err = s.may(auth.ResGroup, req.Group, auth.OpAlter)
	}
	if err != nil {
		return s.refuse(f.Corr, err)
	}
	s.srv.groups.Reset(s.by.Group(), q, req.Start, s.later(f.Corr))
	return nil
}

// memberOf reports whether m's group consumes t.
func memberOf(m *coord.Member, t *topic.Topic) bool {
	return m.Topic() == coord.Topic(topic.Group{T: t})
}
