package server

import (
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

// qualify is the broker's name for a name the client sent.
func (s *session) qualify(name string) string { return wire.Qualify(s.tenant(), name) }

// lookup finds the topic a client names. For a tenant's session the
// qualified name is cached, so that the publish path builds no string per
// batch.
func (s *session) lookup(name []byte) *topic.Topic {
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
// dead-letter topic).
func (s *session) qualifyConfig(kvs []wire.KV) []wire.KV {
	if s.tenant() == "" {
		return kvs
	}
	out := make([]wire.KV, len(kvs))
	for i, kv := range kvs {
		if kv.Key == topic.ConfigDeadLetterTopic && kv.Value != "" {
			if err := wire.ValidateTopicName(kv.Value); err == nil {
				kv.Value = s.qualify(kv.Value)
			}
		}
		out[i] = kv
	}
	return out
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
