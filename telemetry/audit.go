package telemetry

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// The audit log is a built-in plugin (engine.Config.AuditLog): one JSON
// object per line for every admin action, auth event, topic and group
// change and connection accepted, refused or closed. Each line has
//
//	time     RFC 3339 UTC with milliseconds
//	kind     the EventKind, e.g. "topic.created"
//	actor    "client", "admin-token", "broker", or "" when the caller did not say
//	remote   the peer's address, or ""
//	principal, tenant  who acted, when the broker authenticates clients
//	action   what was asked, e.g. "create", "PATCH /api/v1/topics/orders"
//	target   what it was done to, e.g. "topic/orders", "group/g/member/m-1"
//	outcome  "ok", or the error's text
//
// and, when they apply, topic, group, partition and count. Writes go
// through a buffer that is flushed whenever the plugin's queue is
// momentarily empty, so a burst costs few writes and a quiet broker's
// lines reach the file at once.

// AuditStderr is the engine.Config.AuditLog (or EventLog) value that
// writes the log to standard error.
const AuditStderr = "stderr"

// auditLine is the JSON form of one audit record.
type auditLine struct {
	Time      string `json:"time"`
	Kind      string `json:"kind"`
	Actor     string `json:"actor"`
	Remote    string `json:"remote"`
	Principal string `json:"principal,omitempty"`
	Tenant    string `json:"tenant,omitempty"`
	Action    string `json:"action"`
	Target    string `json:"target"`
	Outcome   string `json:"outcome"`
	Topic     string `json:"topic,omitempty"`
	Group     string `json:"group,omitempty"`
	Partition *int   `json:"partition,omitempty"`
	Count     int    `json:"count,omitempty"`
	Offset    *int64 `json:"offset,omitempty"` // the event log's batch and dead-letter lines
	Bytes     int64  `json:"bytes,omitempty"`
}

// auditTime is RFC 3339 with milliseconds; times are written in UTC.
const auditTime = "2006-01-02T15:04:05.000Z07:00"

// AuditLog is the audit-log plugin, and as opened by OpenEventLog the
// event-log plugin (engine.Config.EventLog), which writes every event in the same
// format. It implements engine's Plugin, EventFilter and PluginFlusher and
// io.Closer; its methods run on its plugin goroutine only.
type AuditLog struct {
	name string
	all  bool
	path string
	f    *os.File // nil when writing to stderr
	out  io.Writer
	w    *bufio.Writer
	enc  *json.Encoder
}

// OpenAuditLog opens path for appending (creating it with mode 0600), or
// uses stderr for AuditStderr, as the audit log: changes, access and
// connections.
func OpenAuditLog(path string) (*AuditLog, error) {
	a := &AuditLog{name: "audit-log", path: path, out: os.Stderr}
	if path != AuditStderr {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("engine: audit log: %w", err)
		}
		a.f, a.out = f, f
	}
	a.w = bufio.NewWriterSize(a.out, 64<<10)
	a.enc = json.NewEncoder(a.w)
	a.enc.SetEscapeHTML(false)
	return a, nil
}

// OpenEventLog opens path like OpenAuditLog, as the event log: every
// event, batches and dead-lettered messages with their offsets and bytes.
func OpenEventLog(path string) (*AuditLog, error) {
	l, err := OpenAuditLog(path)
	if err != nil {
		return nil, err
	}
	l.name, l.all = "event-log", true
	return l, nil
}

// Name implements engine.Plugin.
func (a *AuditLog) Name() string { return a.name }

// Accepts implements engine.EventFilter: the audit log records changes, access
// and connections, not traffic.
func (a *AuditLog) Accepts(k EventKind) bool {
	if a.all {
		return true
	}
	switch k {
	case EventAdminAction, EventAuth, EventTopicCreated, EventTopicUpdated, EventTopicDeleted,
		EventGroupChanged, EventConnAccepted, EventConnRefused, EventConnClosed, EventAccessDenied, EventSecurityChanged:
		return true
	}
	return false
}

// Handle implements engine.Plugin: it buffers one line.
func (a *AuditLog) Handle(ev Event) error {
	if !a.Accepts(ev.Kind) {
		return nil // a kind added after this plugin was written
	}
	l := auditRecord(ev)
	if a.all && (ev.Kind == EventBatchPublished || ev.Kind == EventMessageDeadLetter) {
		off := ev.Offset
		l.Offset, l.Bytes = &off, ev.Bytes
	}
	if err := a.enc.Encode(l); err != nil {
		a.w.Reset(a.out) // drop the broken buffer; later lines try again
		return fmt.Errorf("%s %s: %w", a.name, a.path, err)
	}
	if a.f == nil {
		// stderr is shared with the logger and the other log plugin: a
		// line goes out whole, in one write.
		return a.Flush()
	}
	return nil
}

// auditRecord renders ev as an audit line.
func auditRecord(ev Event) auditLine {
	l := auditLine{Time: ev.Time.UTC().Format(auditTime), Kind: string(ev.Kind), Actor: ev.Actor,
		Remote: ev.Remote, Principal: ev.Principal, Tenant: ev.Tenant, Action: ev.Action, Target: ev.Target, Outcome: ev.Outcome(),
		Topic: ev.Topic, Group: ev.Group, Count: ev.Count}
	if ev.Time.IsZero() {
		l.Time = time.Now().UTC().Format(auditTime)
	}
	if l.Action == "" {
		l.Action = string(ev.Kind)
	}
	if ev.Partition >= 0 && ev.Topic != "" {
		p := ev.Partition
		l.Partition = &p
	}
	return l
}

// Flush implements engine.PluginFlusher: it hands the buffered lines to the file.
func (a *AuditLog) Flush() error {
	if err := a.w.Flush(); err != nil {
		a.w.Reset(a.out)
		return fmt.Errorf("%s %s: %w", a.name, a.path, err)
	}
	return nil
}

// Close implements io.Closer: it flushes, syncs and closes the file
// (stderr stays open).
func (a *AuditLog) Close() error {
	err := a.Flush()
	if a.f == nil {
		return err
	}
	if serr := a.f.Sync(); serr != nil && err == nil {
		err = fmt.Errorf("%s %s: %w", a.name, a.path, serr)
	}
	if cerr := a.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("%s %s: %w", a.name, a.path, cerr)
	}
	return err
}
