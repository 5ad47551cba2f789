package wsgw

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/valyala/bytebufferpool"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// command is one decoded command, of either protocol: the binary fields
// (wsproto.Command, aliasing buf), and what only JSON carries.
type command struct {
	wsproto.Command
	bin bool
	buf *bytebufferpool.ByteBuffer // the frame

	jid   json.RawMessage // JSON: the client's id, echoed verbatim; nil for none
	b64   bool            // JSON subscribe: deliveries in base64
	parts []int32         // JSON publish: each record's partition; nil when none names one
	// config is create_topic's configuration.
	config client.TopicConfig

	// Publish results, filled by the publisher.
	acks []client.Ack
	err  error
	size int // bytes reserved against MaxPublishBytes
}

// commands are reused, with the room of their slices: a publish's
// records and acks would otherwise be allocated, and grown, per frame.
var commands = sync.Pool{New: func() any { return new(command) }}

// maxKeptRecords bounds the record slots a pooled command keeps.
const maxKeptRecords = 1 << 14

func newCommand(buf *bytebufferpool.ByteBuffer, bin bool) *command {
	c := commands.Get().(*command)
	c.buf, c.bin = buf, bin
	return c
}

// release returns c to the pool; nothing may use it after.
func (c *command) release() {
	recs, acks := c.Records, c.acks
	clear(recs) // drop the references to the frame
	if cap(recs) > maxKeptRecords {
		recs, acks = nil, nil
	}
	*c = command{acks: acks[:0]}
	c.Records = recs[:0]
	commands.Put(c)
}

// decode decodes the frame in buf.
func (c *command) decode() error {
	if c.bin {
		return c.decodeBinary()
	}
	return c.decodeJSON()
}

func (c *command) decodeBinary() error {
	if err := wsproto.DecodeCommand(c.buf.B, &c.Command); err != nil {
		// An op and id that were read are kept, so the error reply
		// carries the id.
		if op, id, ok := wsproto.PeekID(c.buf.B); ok {
			c.Op, c.ID = op, id
		}
		if wire.CodeOf(err) == wire.CodeInternal {
			return wire.Errorf(wire.CodeMalformed, err.Error())
		}
		return err
	}
	if c.Op == wsproto.OpCreateTopic && len(c.Config) > 0 {
		return c.parseConfig(c.Config)
	}
	return nil
}

// jsonCommand is a JSON command as it arrives.
type jsonCommand struct {
	Op        string          `json:"op"`
	ID        json.RawMessage `json:"id"`
	Topic     string          `json:"topic"`
	Partition *int32          `json:"partition"`
	From      json.RawMessage `json:"from"`
	Encoding  string          `json:"encoding"`
	Token     string          `json:"token"`
	User      string          `json:"user"`
	Password  string          `json:"password"`
	Records   []jsonRecord    `json:"records"`
	Config    json.RawMessage `json:"config"`
}

type jsonRecord struct {
	Key       *string      `json:"key"`
	Value     string       `json:"value"`
	Headers   []jsonHeader `json:"headers"`
	Partition *int32       `json:"partition"`
	Timestamp int64        `json:"timestamp"` // Unix milliseconds; 0 now
	Encoding  string       `json:"encoding"`
}

type jsonHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

var jsonOps = map[string]byte{"auth": wsproto.OpAuth, "subscribe": wsproto.OpSubscribe, "unsubscribe": wsproto.OpUnsubscribe,
	"publish": wsproto.OpPublish, "create_topic": wsproto.OpCreateTopic, "describe_topic": wsproto.OpDescribeTopic,
	"delete_topic": wsproto.OpDeleteTopic}

func invalid(format string, args ...any) error {
	return wire.Errorf(wire.CodeInvalidArgument, fmt.Sprintf(format, args...))
}

func (c *command) decodeJSON() error {
	var j jsonCommand
	if err := json.Unmarshal(c.buf.B, &j); err != nil {
		return wire.Errorf(wire.CodeMalformed, "not a JSON command: "+err.Error())
	}
	if len(j.ID) > 0 && j.ID[0] != '"' && j.ID[0] != '-' && (j.ID[0] < '0' || j.ID[0] > '9') && !bytes.Equal(j.ID, []byte("null")) {
		return invalid("id must be a string or a number")
	}
	c.jid = j.ID
	op, ok := jsonOps[j.Op]
	if !ok {
		return wire.Errorf(wire.CodeUnknownType, fmt.Sprintf("unknown op %q", j.Op))
	}
	c.Op, c.Topic, c.Partition = op, j.Topic, wsproto.PartitionAny
	if j.Partition != nil {
		c.Partition = *j.Partition
	}
	switch op {
	case wsproto.OpAuth:
		c.Token, c.User, c.Password = j.Token, j.User, j.Password
	case wsproto.OpSubscribe:
		c.b64 = j.Encoding == "base64"
		if j.Encoding != "" && j.Encoding != "utf8" && !c.b64 {
			return invalid("encoding %q: want utf8 or base64", j.Encoding)
		}
		return c.parseFrom(j.From)
	case wsproto.OpPublish:
		return c.jsonRecords(&j)
	case wsproto.OpCreateTopic:
		if len(j.Config) > 0 && !bytes.Equal(j.Config, []byte("null")) {
			return c.parseConfig(j.Config)
		}
	}
	return nil
}

// parseFrom reads a subscribe's "from": "latest" (the default),
// "earliest", {"offset": N} or {"time": "RFC 3339"}.
func (c *command) parseFrom(raw json.RawMessage) error {
	c.StartKind = wsproto.StartLatest
	if len(raw) == 0 {
		return nil
	}
	var word string
	if json.Unmarshal(raw, &word) == nil {
		switch word {
		case "latest":
		case "earliest":
			c.StartKind = wsproto.StartEarliest
		default:
			return invalid(`from %q: want "latest", "earliest", {"offset": N} or {"time": "RFC 3339 time"}`, word)
		}
		return nil
	}
	var pos struct {
		Offset *int64  `json:"offset"`
		Time   *string `json:"time"`
	}
	if err := json.Unmarshal(raw, &pos); err != nil || (pos.Offset == nil) == (pos.Time == nil) {
		return invalid(`from: want "latest", "earliest", {"offset": N} or {"time": "RFC 3339 time"}`)
	}
	if pos.Offset != nil {
		c.StartKind, c.StartValue = wsproto.StartOffset, *pos.Offset
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, *pos.Time)
	if err != nil {
		return invalid("from time %q: %v", *pos.Time, err)
	}
	c.StartKind, c.StartValue = wsproto.StartTime, t.UnixNano()
	return nil
}

func (c *command) parseConfig(raw []byte) error {
	var d wsproto.TopicConfigDoc
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return invalid("config: %v", err)
	}
	cfg, err := d.Config()
	c.config = cfg
	return err
}

// jsonRecords turns a JSON publish's records into messages.
func (c *command) jsonRecords(j *jsonCommand) error {
	cmdB64 := j.Encoding == "base64"
	if j.Encoding != "" && j.Encoding != "utf8" && !cmdB64 {
		return invalid("encoding %q: want utf8 or base64", j.Encoding)
	}
	if len(j.Records) == 0 {
		return invalid("a publish needs records")
	}
	c.Records = make([]client.Message, len(j.Records))
	for i := range j.Records {
		r := &j.Records[i]
		b64 := cmdB64
		switch r.Encoding {
		case "":
		case "utf8":
			b64 = false
		case "base64":
			b64 = true
		default:
			return invalid("record %d: encoding %q: want utf8 or base64", i, r.Encoding)
		}
		m := &c.Records[i]
		var err error
		if m.Value, err = decodeField(r.Value, b64); err != nil {
			return invalid("record %d: value: %v", i, err)
		}
		if r.Key != nil {
			if m.Key, err = decodeField(*r.Key, b64); err != nil {
				return invalid("record %d: key: %v", i, err)
			}
		}
		for _, h := range r.Headers {
			v, err := decodeField(h.Value, b64)
			if err != nil {
				return invalid("record %d: header %q: %v", i, h.Key, err)
			}
			m.Headers = append(m.Headers, client.Header{Key: h.Key, Value: v})
		}
		if r.Timestamp != 0 {
			m.Timestamp = time.UnixMilli(r.Timestamp)
		}
		if r.Partition != nil {
			if c.parts == nil {
				c.parts = make([]int32, len(j.Records))
				for k := range c.parts {
					c.parts[k] = c.Partition
				}
			}
			c.parts[i] = *r.Partition
		}
	}
	return nil
}

func decodeField(s string, b64 bool) ([]byte, error) {
	if b64 {
		return base64.StdEncoding.DecodeString(s)
	}
	return []byte(s), nil
}

// partition is the partition record i of a publish goes to.
func (c *command) partition(i int) int32 {
	if c.parts != nil {
		return c.parts[i]
	}
	return c.Partition
}

// Replies.

func (c *conn) replyOK(cmd *command) {
	if cmd.bin {
		_ = c.write(websocket.MessageBinary, wsproto.AppendOK(nil, cmd.ID))
		return
	}
	b := jsonHead("ok", cmd.jid)
	_ = c.write(websocket.MessageText, append(b, '}'))
}

func (c *conn) replyError(cmd *command, err error) {
	code := gateway.Code(err)
	msg := err.Error()
	if cmd.bin {
		_ = c.write(websocket.MessageBinary, wsproto.AppendError(nil, cmd.ID, code, msg))
		return
	}
	b := jsonHead("error", cmd.jid)
	b = strconv.AppendInt(append(b, `,"code":`...), int64(code), 10)
	b = appendJSONString(append(b, `,"kind":`...), []byte(gateway.KindOf(err).String()))
	b = appendJSONString(append(b, `,"message":`...), []byte(msg))
	_ = c.write(websocket.MessageText, append(b, '}'))
}

func (c *conn) replyAck(cmd *command) {
	if cmd.bin {
		_ = c.write(websocket.MessageBinary, wsproto.AppendAck(nil, cmd.ID, cmd.acks))
		return
	}
	b := append(jsonHead("ack", cmd.jid), `,"acks":[`...)
	for i, a := range cmd.acks {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(append(b, `{"partition":`...), int64(a.Partition), 10)
		b = strconv.AppendInt(append(b, `,"offset":`...), a.Offset, 10)
		b = append(b, '}')
	}
	_ = c.write(websocket.MessageText, append(b, "]}"...))
}

func (c *conn) replyTopic(cmd *command, info client.TopicInfo) {
	doc, err := json.Marshal(wsproto.TopicDocOf(info))
	if err != nil {
		c.replyError(cmd, err)
		return
	}
	if cmd.bin {
		_ = c.write(websocket.MessageBinary, wsproto.AppendTopic(nil, cmd.ID, doc))
		return
	}
	b := append(jsonHead("topic", cmd.jid), `,"topic":`...)
	b = append(append(b, doc...), '}')
	_ = c.write(websocket.MessageText, b)
}

// JSON encoding. Written out by hand: deliveries are encoded per record
// on the session's reader, and encoding/json would allocate per record.

// jsonHead starts an answer: its type and the command's id.
func jsonHead(typ string, id json.RawMessage) []byte {
	b := append(append([]byte(`{"type":"`), typ...), '"')
	if len(id) > 0 {
		b = append(append(b, `,"id":`...), id...)
	}
	return b
}

func appendJSONMessagesHead(b []byte, topic string, partition int32) []byte {
	b = appendJSONString(append(b, `{"type":"messages","topic":`...), []byte(topic))
	b = strconv.AppendInt(append(b, `,"partition":`...), int64(partition), 10)
	return append(b, `,"records":[`...)
}

// appendJSONRecord appends one delivered record. Its key, value and
// header values are text when they are all UTF-8 and b64 is off, else all
// base64 with "encoding":"base64" on the record.
func appendJSONRecord(b []byte, comma bool, d *client.Delivery, b64 bool) []byte {
	if comma {
		b = append(b, ',')
	}
	if !b64 {
		b64 = !utf8.Valid(d.Key) || !utf8.Valid(d.Value)
		for _, h := range d.Headers {
			b64 = b64 || !utf8.Valid(h.Value)
		}
	}
	b = strconv.AppendInt(append(b, `{"offset":`...), d.Offset, 10)
	b = strconv.AppendInt(append(b, `,"timestamp":`...), d.Timestamp.UnixMilli(), 10)
	if b64 {
		b = append(b, `,"encoding":"base64"`...)
	}
	if d.Key != nil {
		b = appendJSONField(append(b, `,"key":`...), d.Key, b64)
	}
	b = appendJSONField(append(b, `,"value":`...), d.Value, b64)
	if len(d.Headers) > 0 {
		b = append(b, `,"headers":[`...)
		for i, h := range d.Headers {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(append(b, `{"key":`...), []byte(h.Key))
			b = append(appendJSONField(append(b, `,"value":`...), h.Value, b64), '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func appendJSONField(b, v []byte, b64 bool) []byte {
	if !b64 {
		return appendJSONString(b, v)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD: a text frame must be UTF-8, or a browser closes the
// socket (1007).
func appendJSONString(b, s []byte) []byte {
	if !utf8.Valid(s) {
		s = bytes.ToValidUTF8(s, []byte("\uFFFD"))
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 0x20 && ch != '"' && ch != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch ch {
		case '"', '\\':
			b = append(b, '\\', ch)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[ch>>4], hexDigits[ch&0xf])
		}
		start = i + 1
	}
	return append(append(b, s[start:]...), '"')
}

// publishSize is what a publish command holds against MaxPublishBytes:
// its frame, at least 1 byte and at most the whole budget.
func publishSize(cmd *command, budget int) int {
	return min(max(len(cmd.buf.B), 1), budget, math.MaxInt32)
}
