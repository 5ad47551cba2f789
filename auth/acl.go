package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Op is an operation a rule allows or denies.
type Op uint16

// Operations. Subscribe covers Fetch (reading is reading, pushed or
// pulled); Join covers a group's join, heartbeat, commit, ack and nack, all
// of which need the membership the join made.
const (
	OpPublish Op = 1 << iota
	OpSubscribe
	OpCreate
	OpDelete
	OpAlter
	OpDescribe
	OpJoin
	OpAdmin
	opLast = OpAdmin

	// OpAll is every operation.
	OpAll = opLast<<1 - 1
)

var opNames = []struct {
	op   Op
	name string
}{
	{OpPublish, "publish"}, {OpSubscribe, "subscribe"}, {OpCreate, "create"}, {OpDelete, "delete"},
	{OpAlter, "alter"}, {OpDescribe, "describe"}, {OpJoin, "join"}, {OpAdmin, "admin"},
}

// String lists the operations of o, comma separated.
func (o Op) String() string {
	if o == OpAll {
		return "all"
	}
	var b []string
	for _, n := range opNames {
		if o&n.op != 0 {
			b = append(b, n.name)
		}
	}
	return strings.Join(b, ",")
}

// ParseOps reads a comma-separated list of operations: publish, subscribe
// (or fetch), create, delete, alter, describe, join, admin, or all.
func ParseOps(s string) (Op, error) {
	var o Op
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(strings.ToLower(w))
		switch w {
		case "all", "*":
			o |= OpAll
			continue
		case "fetch", "consume", "read":
			o |= OpSubscribe
			continue
		case "write", "produce":
			o |= OpPublish
			continue
		}
		i := slices.IndexFunc(opNames, func(n struct {
			op   Op
			name string
		}) bool {
			return n.name == w
		})
		if i < 0 {
			return 0, fmt.Errorf("unknown operation %q (publish, subscribe, create, delete, alter, describe, join, admin, all)", w)
		}
		o |= opNames[i].op
	}
	if o == 0 {
		return 0, fmt.Errorf("no operation given")
	}
	return o, nil
}

// MarshalText writes the operations as ParseOps reads them.
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (o *Op) UnmarshalText(b []byte) error {
	v, err := ParseOps(string(b))
	*o = v
	return err
}

// Resource is the kind of thing a rule is about.
type Resource string

// Resources.
const (
	ResTopic   Resource = "topic"
	ResGroup   Resource = "group"
	ResTenant  Resource = "tenant"  // the tenant's own users, rules and quotas
	ResCluster Resource = "cluster" // the broker: admin API, other tenants
)

func (r Resource) valid() bool {
	return r == ResTopic || r == ResGroup || r == ResTenant || r == ResCluster
}

// Pattern says how a rule's name matches a resource's.
type Pattern string

// Patterns. A rule whose name is "*" matches every name whatever its
// pattern.
const (
	PatternLiteral Pattern = "literal"
	PatternPrefix  Pattern = "prefix"
)

// Rule allows or denies a principal operations on resources. Rules belong
// to a tenant, and apply only to that tenant's principals and resources;
// "" is the broker's own namespace.
type Rule struct {
	ID        string   `json:"id"`
	Tenant    string   `json:"tenant,omitempty"`
	Principal string   `json:"principal"` // a user name, or "*" for every authenticated principal of the tenant
	Resource  Resource `json:"resource"`
	Name      string   `json:"name"` // "*" matches every name
	Pattern   Pattern  `json:"pattern"`
	Ops       Op       `json:"ops"`
	Deny      bool     `json:"deny,omitempty"`
}

// Check validates a rule as given by an operator.
func (r *Rule) Check() error {
	if r.Principal == "" {
		return fmt.Errorf("a rule needs a principal (a user name, or *)")
	}
	if r.Principal != "*" {
		if err := ValidateUserName(r.Principal); err != nil {
			return err
		}
	}
	if !r.Resource.valid() {
		return fmt.Errorf("unknown resource %q (topic, group, tenant, cluster)", r.Resource)
	}
	if r.Pattern == "" {
		r.Pattern = PatternLiteral
	}
	if r.Pattern != PatternLiteral && r.Pattern != PatternPrefix {
		return fmt.Errorf("unknown pattern %q (literal, prefix)", r.Pattern)
	}
	if r.Name == "" {
		return fmt.Errorf("a rule needs a resource name (or * for every one)")
	}
	if len(r.Name) > 249 {
		return fmt.Errorf("a rule's resource name is at most 249 bytes")
	}
	if r.Ops == 0 || r.Ops&^OpAll != 0 {
		return fmt.Errorf("a rule needs operations")
	}
	if r.Tenant != "" {
		if err := ValidateTenantName(r.Tenant); err != nil {
			return err
		}
	}
	return nil
}

// impliesDescribe are the operations whose allowance allows describing
// too, as in Kafka: a producer needs a topic's partition count, a
// consumer its offsets. A deny of them denies only themselves.
const impliesDescribe = OpPublish | OpSubscribe | OpCreate | OpDelete | OpAlter | OpJoin

// covers reports whether r is about op.
func (r *Rule) covers(op Op) bool {
	return r.Ops&op != 0 || (!r.Deny && op == OpDescribe && r.Ops&impliesDescribe != 0)
}

// matches reports whether r is about principal user's op on res named name.
func (r *Rule) matches(user string, res Resource, name string, op Op) bool {
	if !r.covers(op) || r.Resource != res || (r.Principal != "*" && r.Principal != user) {
		return false
	}
	switch {
	case r.Name == "*":
		return true
	case r.Pattern == PatternPrefix:
		return strings.HasPrefix(name, r.Name)
	default:
		return r.Name == name
	}
}

// String is the rule as `ratatoskr acl list` shows it.
func (r *Rule) String() string {
	effect := "allow"
	if r.Deny {
		effect = "deny"
	}
	name := r.Name
	if r.Pattern == PatternPrefix && name != "*" {
		name += "*"
	}
	return fmt.Sprintf("%s %s %s on %s %s", effect, r.Principal, r.Ops, r.Resource, name)
}

// decide applies rules to a principal's op: deny wins over allow, and no
// rule at all denies.
func decide(rules []Rule, tenant, user string, res Resource, name string, op Op) bool {
	allowed := false
	for i := range rules {
		r := &rules[i]
		if r.Tenant != tenant || !r.matches(user, res, name, op) {
			continue
		}
		if r.Deny {
			return false
		}
		allowed = true
	}
	return allowed
}
