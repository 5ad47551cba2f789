package httpgw

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// readAll reads an NDJSON body whole, n records a chunk, through r.
func readAll(r io.Reader, n int) ([]client.Message, []int32, error) {
	rd := newNDJSONReader(r, encUTF8, 1<<20)
	var msgs []client.Message
	var parts []int32
	var c chunk
	for {
		err := rd.next(&c, n)
		if err == io.EOF {
			return msgs, parts, nil
		}
		if err != nil {
			return msgs, parts, err
		}
		// Keep copies: the chunk's arena is reused.
		for i := range c.msgs {
			d := client.Delivery{Message: c.msgs[i]}
			msgs = append(msgs, d.Clone().Message)
		}
		parts = append(parts, c.parts...)
	}
}

func TestNDJSONRecords(t *testing.T) {
	body := `{"key":"k","value":"v","headers":{"a":"1"},"partition":2,"timestamp":1700000000000}

{"value":"aGk=","value_encoding":"base64","headers":[{"key":"b","value":"AA==","encoding":"base64"}]}
{"value":{"nested":[1,2]}}
{"value":"no newline at the end"}`
	// Read a byte at a time, so lines straddle every buffer boundary.
	msgs, parts, err := readAll(iotest.OneByteReader(strings.NewReader(body)), 2)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	require.Equal(t, []int32{2, -1, -1, -1}, parts)
	require.Equal(t, "k", string(msgs[0].Key))
	require.Equal(t, "v", string(msgs[0].Value))
	require.Equal(t, []client.Header{{Key: "a", Value: []byte("1")}}, msgs[0].Headers)
	require.EqualValues(t, 1700000000000, msgs[0].Timestamp.UnixMilli())
	require.Nil(t, msgs[1].Key)
	require.Equal(t, "hi", string(msgs[1].Value))
	require.Equal(t, []client.Header{{Key: "b", Value: []byte{0}}}, msgs[1].Headers)
	require.Equal(t, `{"nested":[1,2]}`, string(msgs[2].Value))
	require.Equal(t, "no newline at the end", string(msgs[3].Value))

	_, _, err = readAll(strings.NewReader("{\"value\":\"a\"}\n{\"value\":\"b\"}\n\n{bad\n"), 10)
	var re *requestError
	require.ErrorAs(t, err, &re)
	require.Equal(t, 4, re.line)

	long := `{"value":"` + strings.Repeat("x", 7<<20) + `"}`
	_, _, err = readAll(strings.NewReader(long), 10)
	require.ErrorAs(t, err, &re)
	require.Equal(t, 413, re.status)
}

func TestJSONStringEncoding(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\" back\\ nl\n tab\t ctl\x01 \u2028 é 😀"} {
		got := appendJSONString(nil, []byte(s))
		var p chunk
		d := recordDecoder{maxBytes: 1 << 20}
		v, err := d.p.ParseBytes(append(append([]byte(`{"value":`), got...), '}'))
		require.NoError(t, err, "%s", got)
		require.NoError(t, d.add(v, &p))
		require.Equal(t, s, string(p.msgs[0].Value))
	}
	require.Equal(t, `"a\ufffdb"`, string(appendJSONString(nil, []byte("a\xffb"))))
}

// FuzzRecords feeds arbitrary bodies to the NDJSON and JSON record
// decoders: they must not panic, every record they accept must be
// within the size bound, and a record written back as an answer writes
// it (in base64 and in auto encoding) must decode to the same message.
func FuzzRecords(f *testing.F) {
	for _, s := range []string{
		`{"key":"k","value":"v","headers":{"a":"1"},"partition":2,"timestamp":1}`,
		`{"records":[{"value":"aGk=","value_encoding":"base64"},{"value":null,"key":null}]}`,
		`{"value":"x","headers":[{"key":"h","value":"AA==","encoding":"base64"}]}` + "\n" + `{"value":[1,{"a":"\u00e9"}]}`,
		"{\"value\":\"\\ud83d\\ude00\\n\"}\r\n\n",
		`{"value":"a"}` + "\n" + `{"value": oops}`,
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, n uint8) {
		msgs, _, _ := readAll(bytes.NewReader(body), int(n%8)+1)
		var c chunk
		if err := decodeJSON(body, encUTF8, 1<<20, &c); err == nil {
			msgs = append(msgs, c.msgs...)
		}
		for i := range msgs {
			roundTrip(t, &msgs[i], encBase64)
			roundTrip(t, &msgs[i], encAuto)
		}
	})
}

// roundTrip writes m as an answer does and decodes it as a publish.
func roundTrip(t *testing.T, m *client.Message, enc encoding) {
	t.Helper()
	fields := appendFields(nil, m, enc) // ",..." : the value is always there
	js := append(append([]byte{'{'}, fields[1:]...), '}')
	var c chunk
	d := recordDecoder{maxBytes: 1 << 20}
	v, err := d.p.ParseBytes(js)
	require.NoError(t, err, "%s", js)
	err = d.add(v, &c)
	var re *requestError
	if errors.As(err, &re) && re.status == 413 {
		return // base64 made it no larger; a header key of invalid UTF-8 may
	}
	require.NoError(t, err, "%s", js)
	got := c.msgs[0]
	require.Equal(t, m.Key, got.Key)
	require.Equal(t, string(m.Value), string(got.Value))
	require.Len(t, got.Headers, len(m.Headers))
	for i, h := range m.Headers {
		require.Equal(t, string(h.Value), string(got.Headers[i].Value))
		if !strings.ContainsRune(h.Key, 0xfffd) && utf8Valid(h.Key) {
			require.Equal(t, h.Key, got.Headers[i].Key)
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\ufffd") == s }

// BenchmarkNDJSON decodes 128-byte base64 values, as the load tool
// sends them, a chunk of 4096 records at a time into a reused chunk.
func BenchmarkNDJSON(b *testing.B) {
	line := `{"value":"` + strings.Repeat("QUJD", 43) + `"}` + "\n"
	body := []byte(strings.Repeat(line, 4096))
	var c chunk
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd := newNDJSONReader(bytes.NewReader(body), encBase64, 1<<20)
		for rd.next(&c, 4096) == nil {
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*4096), "ns/record")
}
