package server

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Tenants. A principal of a tenant names topics and groups as its tenant
// knows them ("orders"); the broker keeps them qualified ("acme~orders",
// wire.Qualify). The session qualifies every name a request carries and
// strips the qualification from every name an answer carries, so a
// tenant's client never sees another tenant's names and cannot name
// them: '~' is outside the alphabet of names on the wire. Names built
// elsewhere for clients (delivery prefixes of replays, group feeds and
// dead letters, assignments) are stripped where they are built
// (wire.Unqualified). A principal of no tenant sees the broker's own
// namespace, which holds no tenant's names either.

// maxQualified bounds the session's cache of qualified topic names.
const maxQualified = 1024

// tenant is the session's tenant, "" for none.
func (s *session) tenant() string {
	if p := s.auth.principal; p != nil {
		return p.Tenant
	}
	return ""
}

// qualify is the broker's name for a name the client sent; a name that
// holds the tenant separator is refused for every session, of a tenant or
// not, since it would name some tenant's resource.
func (s *session) qualify(name string) (string, error) {
	if strings.IndexByte(name, wire.TenantSep) >= 0 {
		return "", wire.Errorf(wire.CodeInvalidArgument, "name "+strconv.Quote(name)+
			": names are of a-z, A-Z, 0-9, '.', '_' and '-'")
	}
	return wire.Qualify(s.tenant(), name), nil
}

// lookup finds the topic a client names. For a tenant's session the
// qualified name is cached, so that the publish path builds no string per
// batch. A name with the tenant separator names no topic.
func (s *session) lookup(name []byte) *topic.Topic {
	if bytes.IndexByte(name, wire.TenantSep) >= 0 {
		return nil
	}
	tn := s.tenant()
	if tn == "" {
		return s.srv.topics.Get(name)
	}
	q, ok := s.auth.qualified[string(name)]
	if !ok {
		q = wire.Qualify(tn, string(name))
		if s.auth.qualified == nil {
			s.auth.qualified = map[string]string{}
		}
		if len(s.auth.qualified) < maxQualified {
			s.auth.qualified[string(name)] = q
		}
	}
	return s.srv.topics.GetName(q)
}

// mine reports whether a broker-side name is in the session's namespace.
func (s *session) mine(name string) bool { return wire.TenantOf(name) == s.tenant() }

// qualifyConfig qualifies the topic names a topic config carries (its
// dead-letter topic), which the principal must be allowed to publish to:
// the broker writes there on its behalf.
func (s *session) qualifyConfig(kvs []wire.KV) ([]wire.KV, error) {
	out := make([]wire.KV, len(kvs))
	for i, kv := range kvs {
		if kv.Key == topic.ConfigDeadLetterTopic && kv.Value != "" {
			if err := wire.ValidateTopicName(kv.Value); err != nil {
				return nil, wire.Errorf(wire.CodeInvalidArgument, "dead-letter-topic "+strconv.Quote(kv.Value)+": "+err.Error())
			}
			if err := s.mayDeadLetter(kv.Value); err != nil {
				return nil, err
			}
			kv.Value = wire.Qualify(s.tenant(), kv.Value)
		}
		out[i] = kv
	}
	return out, nil
}

// mayDeadLetter checks that the principal may have the broker write to a
// dead-letter topic for it: publish to it, and create it (the broker
// creates a missing one).
func (s *session) mayDeadLetter(name string) error {
	if err := s.may(auth.ResTopic, name, auth.OpPublish); err != nil {
		return err
	}
	return s.may(auth.ResTopic, name, auth.OpCreate)
}

// unqualifyText takes the session's tenant prefix out of a message meant
// for its client (errors built from the broker's names).
func (s *session) unqualifyText(msg string) string {
	if tn := s.tenant(); tn != "" {
		return strings.ReplaceAll(msg, tn+string(wire.TenantSep), "")
	}
	return msg
}

// stripInfo names a topic description as the session's tenant does.
func stripInfo(info *wire.TopicInfo) {
	info.Name = wire.Unqualified(info.Name)
	for i, kv := range info.Config {
		if kv.Key == topic.ConfigDeadLetterTopic || kv.Key == wire.DefaultPrefix+topic.ConfigDeadLetterTopic {
			info.Config[i].Value = wire.Unqualified(kv.Value)
		}
	}
}
