package main

// How `sub` prints a message: the value alone (the default), a --format
// template, or --output json.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// formatHelp documents --format; the verbs are those of compileFormat.
const formatHelp = `Print each message by this template, followed by a newline: ` +
	`%v value, %k key, %t topic, %p partition, %o offset, %T timestamp (RFC 3339, UTC), ` +
	`%U timestamp (Unix milliseconds), %h headers (k=v,k=v), %S value size in bytes, %% a percent sign; ` +
	`escapes \n newline, \t tab, \r carriage return, \\ backslash. Example: '%p/%o %k: %v'.`

// outputHelp documents sub's --output.
const outputHelp = `text, or json: one JSON object per line with topic, partition, offset, timestamp (RFC 3339), ` +
	`key, headers ([{"key":..,"value":..}]) and value. A value, key or header value that is valid UTF-8 is a string ` +
	`("value"); any other is base64 under "value_base64" ("key_base64").`

// formatFunc appends one message's line, newline included, to dst.
type formatFunc func(dst []byte, d *client.Delivery) []byte

// valueOnly is the default output: the value and a newline.
func valueOnly(dst []byte, d *client.Delivery) []byte {
	return append(append(dst, d.Value...), '\n')
}

// piece of a compiled template: literal text, or a verb.
type piece struct {
	lit  string
	verb byte // 0 for literal text
}

// compileFormat parses a --format template.
func compileFormat(tmpl string) (formatFunc, error) {
	var pieces []piece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			pieces = append(pieces, piece{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(tmpl); i++ {
		ch := tmpl[i]
		if ch != '%' && ch != '\\' {
			lit.WriteByte(ch)
			continue
		}
		if i+1 == len(tmpl) {
			return nil, fmt.Errorf("--format %q ends with a lone %c", tmpl, ch)
		}
		i++
		next := tmpl[i]
		if ch == '\\' {
			esc, ok := map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', '\\': '\\'}[next]
			if !ok {
				return nil, fmt.Errorf(`--format: unknown escape \%c (known: \n \t \r \\)`, next)
			}
			lit.WriteByte(esc)
			continue
		}
		switch next {
		case '%':
			lit.WriteByte('%')
		case 'v', 'k', 't', 'p', 'o', 'T', 'U', 'h', 'S':
			flush()
			pieces = append(pieces, piece{verb: next})
		default:
			return nil, fmt.Errorf("--format: unknown verb %%%c (known: %%v %%k %%t %%p %%o %%T %%U %%h %%S %%%%)", next)
		}
	}
	flush()
	return func(dst []byte, d *client.Delivery) []byte {
		for _, p := range pieces {
			dst = appendPiece(dst, p, d)
		}
		return append(dst, '\n')
	}, nil
}

func appendPiece(dst []byte, p piece, d *client.Delivery) []byte {
	switch p.verb {
	case 0:
		return append(dst, p.lit...)
	case 'v':
		return append(dst, d.Value...)
	case 'k':
		return append(dst, d.Key...)
	case 't':
		return append(dst, d.Topic...)
	case 'p':
		return strconv.AppendInt(dst, int64(d.Partition), 10)
	case 'o':
		return strconv.AppendInt(dst, d.Offset, 10)
	case 'T':
		return d.Timestamp.UTC().AppendFormat(dst, time.RFC3339Nano)
	case 'U':
		return strconv.AppendInt(dst, d.Timestamp.UnixMilli(), 10)
	case 'S':
		return strconv.AppendInt(dst, int64(len(d.Value)), 10)
	}
	for i, h := range d.Headers { // 'h'
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(append(append(dst, h.Key...), '='), h.Value...)
	}
	return dst
}

// jsonMessage is one line of --output json.
type jsonMessage struct {
	Topic       string       `json:"topic"`
	Partition   int32        `json:"partition"`
	Offset      int64        `json:"offset"`
	Timestamp   string       `json:"timestamp"`
	Key         *string      `json:"key,omitempty"`
	KeyBase64   *string      `json:"key_base64,omitempty"`
	Headers     []jsonHeader `json:"headers"`
	Value       *string      `json:"value,omitempty"`
	ValueBase64 *string      `json:"value_base64,omitempty"`
}

type jsonHeader struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

// text is b as a string when it is valid UTF-8, else as base64.
func text(b []byte) (plain, encoded *string) {
	s := ""
	if utf8.Valid(b) {
		s = string(b)
		return &s, nil
	}
	s = base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// jsonLine is the formatFunc of --output json.
func jsonLine(dst []byte, d *client.Delivery) []byte {
	m := jsonMessage{Topic: d.Topic, Partition: d.Partition, Offset: d.Offset,
		Timestamp: d.Timestamp.UTC().Format(time.RFC3339Nano), Headers: make([]jsonHeader, len(d.Headers))}
	if d.Key != nil {
		m.Key, m.KeyBase64 = text(d.Key)
	}
	m.Value, m.ValueBase64 = text(d.Value)
	for i, h := range d.Headers {
		m.Headers[i].Key = h.Key
		m.Headers[i].Value, m.Headers[i].ValueBase64 = text(h.Value)
	}
	b, err := json.Marshal(m)
	if err != nil { // strings and numbers only: cannot fail
		panic(err)
	}
	return append(append(dst, b...), '\n')
}
