package httpgw

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
)

// maxFetchBytes bounds ?max_bytes=, so one answer stays a size a client
// can hold.
const maxFetchBytes = 64 << 20

// fetch is GET /v1/topics/{topic}/partitions/{partition}/messages.
func (h *handler) fetch(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	q := r.URL.Query()
	part, err := parsePartition(r.PathValue("partition"))
	var pos client.Position
	if err == nil {
		pos, err = parsePosition(q.Get("offset"), client.Earliest)
	}
	var opts []client.FetchOption
	if err == nil {
		opts, err = fetchOptions(q.Get("max_bytes"), q.Get("wait"))
	}
	var enc encoding
	if err == nil {
		enc, err = outputEncoding(q.Get("encoding"))
	}
	if err != nil {
		h.g.Metrics().Request(via, err)
		h.fail(w, err)
		return
	}
	h.session(w, r, func(s *gateway.Session) error {
		f, err := s.Fetch(r.Context(), topic, part, pos, opts...)
		if err != nil {
			return err
		}
		h.g.Metrics().Delivered(via, len(f.Messages))
		writeRaw(w, http.StatusOK, appendFetched(nil, int32(part), &f, enc))
		return nil
	})
}

func fetchOptions(maxBytes, wait string) ([]client.FetchOption, error) {
	var opts []client.FetchOption
	if maxBytes != "" {
		n, err := strconv.Atoi(maxBytes)
		if err != nil || n < 1 || n > maxFetchBytes {
			return nil, badRequest("max_bytes must be an integer from 1 to " + strconv.Itoa(maxFetchBytes))
		}
		opts = append(opts, client.MaxBytes(n))
	}
	if wait != "" {
		d, err := parseWait(wait)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.MaxWait(d))
	}
	return opts, nil
}

// parseWait reads ?wait=: a Go duration ("2s", "500ms") or a number of
// milliseconds.
func parseWait(s string) (time.Duration, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badRequest(`wait must be a duration ("2s", "500ms") or milliseconds`)
	}
	return d, nil
}

func parsePartition(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 30)
	if err != nil {
		return 0, badRequest("the partition must be an integer from 0, not " + strconv.Quote(s))
	}
	return int(n), nil
}

// parsePosition reads a position: earliest, latest, an offset, or an
// RFC 3339 time (the first message at or after it); empty is def.
func parsePosition(s string, def client.Position) (client.Position, error) {
	switch s {
	case "":
		return def, nil
	case "earliest":
		return client.Earliest, nil
	case "latest":
		return client.Latest, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return client.Position{}, badRequest("an offset must not be negative")
		}
		return client.AtOffset(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return client.AtTime(t), nil
	}
	return client.Position{}, badRequest(`a position is "earliest", "latest", an offset or an RFC 3339 time, not ` + strconv.Quote(s))
}

// outputEncoding reads an answer's ?encoding=: auto (UTF-8 text where
// the bytes are valid UTF-8, else base64) or base64.
func outputEncoding(s string) (encoding, error) {
	switch s {
	case "", "auto":
		return encAuto, nil
	case "base64":
		return encBase64, nil
	}
	return 0, badRequest(`unknown encoding "` + s + `": use "auto" or "base64"`)
}

// appendFetched appends a fetch's answer.
func appendFetched(dst []byte, part int32, f *client.Fetched, enc encoding) []byte {
	dst = append(dst, `{"partition":`...)
	dst = strconv.AppendInt(dst, int64(part), 10)
	dst = append(dst, `,"records":[`...)
	for i := range f.Messages {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendDelivery(dst, &f.Messages[i], enc)
	}
	dst = append(dst, `],"next_offset":`...)
	dst = strconv.AppendInt(dst, f.Next, 10)
	dst = append(dst, `,"start_offset":`...)
	dst = strconv.AppendInt(dst, f.Start, 10)
	dst = append(dst, `,"end_offset":`...)
	dst = strconv.AppendInt(dst, f.End, 10)
	return append(dst, "}\n"...)
}

// appendDelivery appends one delivered record, as fetch answers and
// stream events carry it.
func appendDelivery(dst []byte, d *client.Delivery, enc encoding) []byte {
	dst = append(dst, `{"partition":`...)
	dst = strconv.AppendInt(dst, int64(d.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, d.Offset, 10)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, d.Timestamp.UnixMilli(), 10)
	dst = appendFields(dst, &d.Message, enc)
	return append(dst, '}')
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, status = []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`), http.StatusInternalServerError
	}
	writeRaw(w, status, append(b, '\n'))
}
