package httpgw

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A record, in a publish request and in fetch and stream answers, is a
// JSON object:
//
//	{"key": "k", "value": "v", "headers": {"name": "v"}, "partition": 0, "timestamp": 1700000000000}
//
// key and value are strings, UTF-8 text unless the record's
// key_encoding / value_encoding (or the request's ?encoding=) says
// "base64". A value that is not a string (an object, an array, a number)
// is published as its JSON text. headers is an object of string values,
// or an array of {"key", "value", "encoding"} objects (the form answers
// use, since it keeps order and repeated names). timestamp is Unix
// milliseconds; absent, the broker's time. Unknown fields are refused,
// so that a misspelt one is not silently dropped.

// encoding is how a key, value or header value is written in JSON.
type encoding uint8

const (
	encUTF8   encoding = iota // the bytes as a JSON string
	encBase64                 // standard base64 with padding (RFC 4648 §4)
	encAuto                   // answers only: UTF-8 when the bytes are valid UTF-8, else base64
)

func parseEncoding(s string, def encoding) (encoding, error) {
	switch s {
	case "":
		return def, nil
	case "utf8", "utf-8":
		return encUTF8, nil
	case "base64":
		return encBase64, nil
	}
	return 0, badRequest(`unknown encoding "` + s + `": use "utf8" or "base64"`)
}

// chunkPool keeps chunks, with their grown arenas and slices, from one
// request to the next: growing them anew for each request was a third of
// the NDJSON path's time.
var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// chunk is a run of decoded records, published together: their bytes
// live in arena, their headers in hdrs.
type chunk struct {
	msgs  []client.Message
	parts []int32 // each record's partition, or -1 when it names none
	arena []byte
	hdrs  []client.Header
	bytes int // the records' message sizes, summed
}

func (c *chunk) reset() {
	clear(c.msgs) // drop references into the arena's previous use
	c.msgs, c.parts, c.arena, c.hdrs, c.bytes = c.msgs[:0], c.parts[:0], c.arena[:0], c.hdrs[:0], 0
}

// hold copies b into the arena. Growing the arena leaves earlier records
// pointing at the old one, which stays alive through them.
func (c *chunk) hold(b []byte) []byte {
	c.grow()
	start := len(c.arena)
	c.arena = append(c.arena, b...)
	return c.arena[start:len(c.arena):len(c.arena)]
}

// grow gives a new arena its first buffer, so that even an empty field
// is a non-nil slice ("key": "" is a key, unlike no key).
func (c *chunk) grow() {
	if c.arena == nil {
		c.arena = make([]byte, 0, 64<<10)
	}
}

// holdDecoded is hold for a field in enc.
func (c *chunk) holdDecoded(b []byte, enc encoding) ([]byte, error) {
	if enc != encBase64 {
		return c.hold(b), nil
	}
	c.grow()
	start := len(c.arena)
	out, err := base64.StdEncoding.AppendDecode(c.arena, b)
	if err != nil {
		return nil, errors.New("not valid base64")
	}
	c.arena = out
	return c.arena[start:len(c.arena):len(c.arena)], nil
}

// recordDecoder turns JSON records into a chunk's messages.
type recordDecoder struct {
	p        fastjson.Parser
	def      encoding // the request's encoding
	maxBytes int      // the broker's bound on one message
}

// fieldError is a record's fault, in words.
type fieldError string

func (e fieldError) Error() string { return string(e) }

// add decodes one record into c.
func (d *recordDecoder) add(v *fastjson.Value, c *chunk) error {
	o, err := v.Object()
	if err != nil {
		return fieldError("a record must be a JSON object")
	}
	var key, value, keyEnc, valueEnc, headers, partition, ts *fastjson.Value
	var bad string
	o.Visit(func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "key":
			key = v
		case "value":
			value = v
		case "key_encoding":
			keyEnc = v
		case "value_encoding":
			valueEnc = v
		case "headers":
			headers = v
		case "partition":
			partition = v
		case "timestamp":
			ts = v
		default:
			if bad == "" {
				bad = "unknown field " + strconv.Quote(string(k))
			}
		}
	})
	if bad != "" {
		return fieldError(bad)
	}
	var m client.Message
	kenc, err := d.fieldEncoding(keyEnc, "key_encoding")
	if err != nil {
		return err
	}
	venc, err := d.fieldEncoding(valueEnc, "value_encoding")
	if err != nil {
		return err
	}
	if key != nil && key.Type() != fastjson.TypeNull {
		b, err := key.StringBytes()
		if err != nil {
			return fieldError("key must be a string")
		}
		if m.Key, err = c.holdDecoded(b, kenc); err != nil {
			return fieldError("key: " + err.Error())
		}
	}
	if m.Value, err = d.value(value, venc, c); err != nil {
		return err
	}
	if headers != nil {
		if m.Headers, err = d.headers(headers, c); err != nil {
			return err
		}
	}
	part := int32(-1)
	if partition != nil && partition.Type() != fastjson.TypeNull {
		n, err := partition.Int()
		if err != nil || n < 0 || n > 1<<30 {
			return fieldError("partition must be an integer from 0")
		}
		part = int32(n)
	}
	if ts != nil && ts.Type() != fastjson.TypeNull {
		ms, err := ts.Int64()
		if err != nil || ms < 0 {
			return fieldError("timestamp must be Unix milliseconds, an integer from 0")
		}
		m.Timestamp = time.UnixMilli(ms)
	}
	size := wire.MessageSize(m.Key, m.Value, m.Headers)
	if size > d.maxBytes {
		return tooLarge("the record is " + strconv.Itoa(size) + " bytes, more than the broker's limit of " +
			strconv.Itoa(d.maxBytes))
	}
	c.msgs = append(c.msgs, m)
	c.parts = append(c.parts, part)
	c.bytes += size
	return nil
}

func (d *recordDecoder) fieldEncoding(v *fastjson.Value, name string) (encoding, error) {
	if v == nil || v.Type() == fastjson.TypeNull {
		return d.def, nil
	}
	b, err := v.StringBytes()
	if err != nil {
		return 0, fieldError(name + " must be a string")
	}
	e, err := parseEncoding(string(b), d.def)
	if err != nil {
		return 0, fieldError(name + `: use "utf8" or "base64"`)
	}
	return e, nil
}

// value decodes a record's value: a string in enc, or any other JSON
// value as its text.
func (d *recordDecoder) value(v *fastjson.Value, enc encoding, c *chunk) ([]byte, error) {
	switch {
	case v == nil || v.Type() == fastjson.TypeNull:
		return nil, nil
	case v.Type() == fastjson.TypeString:
		b, _ := v.StringBytes()
		out, err := c.holdDecoded(b, enc)
		if err != nil {
			return nil, fieldError("value: " + err.Error())
		}
		return out, nil
	}
	start := len(c.arena)
	c.arena = v.MarshalTo(c.arena)
	return c.arena[start:len(c.arena):len(c.arena)], nil
}

// headers decodes {"name": "value", ...} or [{"key", "value", "encoding"}, ...].
func (d *recordDecoder) headers(v *fastjson.Value, c *chunk) ([]client.Header, error) {
	start := len(c.hdrs)
	switch v.Type() {
	case fastjson.TypeNull:
		return nil, nil
	case fastjson.TypeObject:
		o, _ := v.Object()
		var err error
		o.Visit(func(k []byte, hv *fastjson.Value) {
			if err != nil {
				return
			}
			var b []byte
			if b, err = hv.StringBytes(); err != nil {
				err = fieldError("header " + strconv.Quote(string(k)) + ": its value must be a string")
				return
			}
			var val []byte
			if val, err = c.holdDecoded(b, d.def); err != nil {
				err = fieldError("header " + strconv.Quote(string(k)) + ": " + err.Error())
				return
			}
			c.hdrs = append(c.hdrs, client.Header{Key: string(k), Value: val})
		})
		if err != nil {
			return nil, err
		}
	case fastjson.TypeArray:
		a, _ := v.Array()
		for _, h := range a {
			if err := d.header(h, c); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fieldError("headers must be an object or an array")
	}
	if len(c.hdrs) == start {
		return nil, nil
	}
	return c.hdrs[start:len(c.hdrs):len(c.hdrs)], nil
}

// header decodes one {"key", "value", "encoding"} of a header array.
func (d *recordDecoder) header(v *fastjson.Value, c *chunk) error {
	o, err := v.Object()
	if err != nil {
		return fieldError(`a header must be an object {"key": ..., "value": ...}`)
	}
	var k, val, enc *fastjson.Value
	bad := false
	o.Visit(func(name []byte, fv *fastjson.Value) {
		switch string(name) {
		case "key":
			k = fv
		case "value":
			val = fv
		case "encoding":
			enc = fv
		default:
			bad = true
		}
	})
	if bad || k == nil {
		return fieldError(`a header must be an object {"key": ..., "value": ..., "encoding": ...}`)
	}
	kb, err := k.StringBytes()
	if err != nil {
		return fieldError("a header's key must be a string")
	}
	e, err := d.fieldEncoding(enc, "a header's encoding")
	if err != nil {
		return err
	}
	var vb []byte
	if val != nil && val.Type() != fastjson.TypeNull {
		s, err := val.StringBytes()
		if err != nil {
			return fieldError("a header's value must be a string")
		}
		if vb, err = c.holdDecoded(s, e); err != nil {
			return fieldError("header " + strconv.Quote(string(kb)) + ": " + err.Error())
		}
	}
	c.hdrs = append(c.hdrs, client.Header{Key: string(kb), Value: vb})
	return nil
}

// ndjsonReader reads an NDJSON body a chunk at a time.
type ndjsonReader struct {
	br      *bufio.Reader
	dec     recordDecoder
	line    int    // lines read
	long    []byte // a line longer than br's buffer, being put together
	maxLine int
}

func newNDJSONReader(r io.Reader, def encoding, maxMessageBytes int) *ndjsonReader {
	return &ndjsonReader{br: bufio.NewReaderSize(r, 64<<10), dec: recordDecoder{def: def, maxBytes: maxMessageBytes},
		// JSON escapes make a record's line up to six times its bytes
		// (\u00XX), base64 a third more; anything longer cannot be a
		// record the broker takes.
		maxLine: 6*maxMessageBytes + 64<<10}
}

// chunkBytes bounds the bytes of one chunk's records, besides the record
// count, so large records make smaller chunks.
const chunkBytes = 4 << 20

// next fills c with up to n records; io.EOF when the body ended with no
// record read. A bad line fails with its number; c then holds the chunk's
// records before it, which the caller does not publish.
func (r *ndjsonReader) next(c *chunk, n int) error {
	c.reset()
	for len(c.msgs) < n && c.bytes < chunkBytes {
		line, err := r.readLine()
		if len(line) > 0 {
			if perr := r.parse(line, c); perr != nil {
				return perr
			}
		}
		if errors.Is(err, io.EOF) {
			if len(c.msgs) == 0 {
				return io.EOF
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parse decodes one line, skipping a blank one.
func (r *ndjsonReader) parse(line []byte, c *chunk) error {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil
	}
	v, err := r.dec.p.ParseBytes(line)
	if err != nil {
		return &requestError{status: 400, code: "invalid", msg: "malformed JSON: " + err.Error(), line: r.line}
	}
	if err := r.dec.add(v, c); err != nil {
		return atLine(err, r.line)
	}
	return nil
}

// atLine puts line into a record's error.
func atLine(err error, line int) error {
	var re *requestError
	if errors.As(err, &re) {
		out := *re
		out.line = line
		return &out
	}
	return &requestError{status: 400, code: "invalid", msg: err.Error(), line: line}
}

// readLine returns the next line without its newline, valid until the
// next call, and io.EOF with the last one.
func (r *ndjsonReader) readLine() ([]byte, error) {
	r.long = r.long[:0]
	for {
		b, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			r.line++
			if len(r.long) > 0 {
				r.long = append(r.long, b[:len(b)-1]...)
				return r.long, nil
			}
			return b[:len(b)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			r.long = append(r.long, b...)
			if len(r.long) > r.maxLine {
				return nil, &requestError{status: 413, code: "too_large", line: r.line + 1,
					msg: "the line is longer than " + strconv.Itoa(r.maxLine) + " bytes, too long for a record the broker takes"}
			}
		case errors.Is(err, io.EOF):
			r.long = append(r.long, b...)
			if len(r.long) > 0 {
				r.line++
			}
			return r.long, io.EOF
		default:
			return nil, err
		}
	}
}

// decodeJSON decodes a JSON body: one record, or {"records": [...]}.
func decodeJSON(body []byte, def encoding, maxMessageBytes int, c *chunk) error {
	d := recordDecoder{def: def, maxBytes: maxMessageBytes}
	v, err := d.p.ParseBytes(body)
	if err != nil {
		return badRequest("malformed JSON: " + err.Error())
	}
	if v.Type() != fastjson.TypeObject {
		return badRequest(`the body must be a record object or {"records": [...]}`)
	}
	recs := v.Get("records")
	if recs == nil {
		if err := d.add(v, c); err != nil {
			return inRecord(err, 1)
		}
		return nil
	}
	o, _ := v.Object()
	if o.Len() != 1 {
		return badRequest(`a body with "records" must have no other field`)
	}
	a, err := recs.Array()
	if err != nil {
		return badRequest(`"records" must be an array`)
	}
	for i, r := range a {
		if err := d.add(r, c); err != nil {
			return inRecord(err, i+1)
		}
	}
	return nil
}

// inRecord puts the record's number, from 1, into its error.
func inRecord(err error, i int) error {
	var re *requestError
	if errors.As(err, &re) {
		out := *re
		out.msg = "record " + strconv.Itoa(i) + ": " + re.msg
		return &out
	}
	return badRequest("record " + strconv.Itoa(i) + ": " + err.Error())
}

// appendFields appends a message's key, value and headers as JSON object
// fields, with a leading comma, in enc (encAuto or encBase64).
func appendFields(dst []byte, m *client.Message, enc encoding) []byte {
	if m.Key != nil {
		dst = appendBytesField(dst, `,"key":`, `,"key_encoding":"base64"`, m.Key, enc)
	}
	dst = appendBytesField(dst, `,"value":`, `,"value_encoding":"base64"`, m.Value, enc)
	if len(m.Headers) > 0 {
		dst = append(dst, `,"headers":[`...)
		for i, h := range m.Headers {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"key":`...)
			dst = appendString(dst, h.Key)
			dst = appendBytesField(dst, `,"value":`, `,"encoding":"base64"`, h.Value, enc)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return dst
}

// appendBytesField appends name and b as a string in enc, and marker
// after it when that is base64.
func appendBytesField(dst []byte, name, marker string, b []byte, enc encoding) []byte {
	dst = append(dst, name...)
	if enc == encBase64 || !utf8.Valid(b) {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		dst = append(dst, '"')
		return append(dst, marker...)
	}
	return appendJSONString(dst, b)
}

func appendString(dst []byte, s string) []byte {
	return appendJSONString(dst, []byte(s))
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends b as a JSON string; invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(dst, b []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, b[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, b[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"')
}
