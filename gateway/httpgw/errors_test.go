package httpgw_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/gateway/httpgw"
)

// TestAuth: with authentication on, a request without credentials or
// with wrong ones is 401 with a challenge, one the ACLs refuse is 403,
// and the client's own credentials (Basic, bearer) are what the broker
// checks.
func TestAuth(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.Auth = true })
	base := "http://" + e.HTTPAddr()
	admin := "Authorization: Bearer " + adminToken
	createTopic(t, base, "orders", 1, admin)
	createTopic(t, base, "secret", 1, admin)
	require.NoError(t, e.Security().AddUser("alice", "", auth.RoleUser, "correct horse"))
	_, err := e.Security().AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "orders",
		Ops: auth.OpPublish | auth.OpSubscribe})
	require.NoError(t, err)
	alice := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:correct horse"))

	a := call(t, "GET", base+"/v1/topics", "", nil)
	require.Equal(t, http.StatusUnauthorized, a.status, "%s", a.body)
	require.Equal(t, "unauthenticated", a.errCode(t))
	require.Contains(t, a.header.Values("WWW-Authenticate"), `Basic realm="ratatoskr"`)
	a = call(t, "POST", base+"/v1/topics/orders/messages", "", []byte("x"),
		"Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("alice:wrong horse")))
	require.Equal(t, http.StatusUnauthorized, a.status, "%s", a.body)
	a = call(t, "GET", base+"/v1/topics/orders/stream", "", nil, "Authorization: Bearer not-a-token")
	require.Equal(t, http.StatusUnauthorized, a.status, "%s", a.body)

	a = call(t, "POST", base+"/v1/topics/secret/messages", "", []byte("x"), alice)
	require.Equal(t, http.StatusForbidden, a.status, "%s", a.body)
	require.Equal(t, "denied", a.errCode(t))
	a = call(t, "GET", base+"/v1/topics/secret/partitions/0/messages", "", nil, alice)
	require.Equal(t, http.StatusForbidden, a.status, "%s", a.body)
	a = call(t, "GET", base+"/v1/topics/secret/stream", "", nil, alice)
	require.Equal(t, http.StatusForbidden, a.status, "%s", a.body)
	a = call(t, "DELETE", base+"/v1/topics/orders", "", nil, alice)
	require.Equal(t, http.StatusForbidden, a.status, "%s", a.body)

	a = call(t, "POST", base+"/v1/topics/orders/messages", "", []byte("x"), alice)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	a = call(t, "GET", base+"/v1/topics", "", nil, alice)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	require.JSONEq(t, `{"topics":[{"name":"orders","partitions":1}]}`, string(a.body), "alice sees only what she may describe")
	a = call(t, "GET", base+"/v1/topics", "", nil, admin)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	require.Len(t, a.json(t)["topics"], 2)
}

// TestBadInput: each malformed or oversized request gets its status and
// a JSON error, and the broker goes on serving.
func TestBadInput(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.MaxMessageBytes = 1000 })
	base := gatewayServer(t, e, httpgw.Config{MaxBodyBytes: 64 << 10, MaxMessageBytes: 1000, ChunkRecords: 2})
	createTopic(t, base, "t", 2)
	pub := base + "/v1/topics/t/messages"
	big := strings.Repeat("x", 1200)

	cases := []struct {
		name, method, url, ctype, body string
		status                         int
		code                           string
	}{
		{"malformed JSON", "POST", pub, "application/json", `{"value": "x"`, 400, "invalid"},
		{"JSON not an object", "POST", pub, "application/json", `["x"]`, 400, "invalid"},
		{"unknown field", "POST", pub, "application/json", `{"valeu":"x"}`, 400, "invalid"},
		{"bad record in a batch", "POST", pub, "application/json", `{"records":[{"value":"a"},{"value":1,"key":2}]}`, 400, "invalid"},
		{"bad base64", "POST", pub + "?encoding=base64", "application/json", `{"value":"%%%"}`, 400, "invalid"},
		{"bad encoding", "POST", pub + "?encoding=rot13", "application/json", `{"value":"a"}`, 400, "invalid"},
		{"record too large", "POST", pub, "application/json", `{"value":"` + big + `"}`, 413, "too_large"},
		{"raw body too large", "POST", pub, "", big, 413, "too_large"},
		{"body too large", "POST", pub, "application/json", `{"records":[` + strings.Repeat(`{"value":"`+strings.Repeat("y", 500)+`"},`, 200) + `{}]}`, 413, "too_large"},
		{"unknown topic", "POST", base + "/v1/topics/nope/messages", "", "x", 404, "not_found"},
		{"unknown partition", "POST", pub + "?partition=9", "", "x", 404, "not_found"},
		{"bad partition", "POST", pub + "?partition=-1", "", "x", 400, "invalid"},
		{"fetch unknown topic", "GET", base + "/v1/topics/nope/partitions/0/messages", "", "", 404, "not_found"},
		{"fetch unknown partition", "GET", base + "/v1/topics/t/partitions/9/messages", "", "", 404, "not_found"},
		{"fetch bad partition", "GET", base + "/v1/topics/t/partitions/x/messages", "", "", 400, "invalid"},
		{"fetch negative offset", "GET", base + "/v1/topics/t/partitions/0/messages?offset=-1", "", "", 400, "invalid"},
		{"fetch bad offset", "GET", base + "/v1/topics/t/partitions/0/messages?offset=soon", "", "", 400, "invalid"},
		{"fetch offset past the end", "GET", base + "/v1/topics/t/partitions/0/messages?offset=1000", "", "", 416, "out_of_range"},
		{"fetch bad wait", "GET", base + "/v1/topics/t/partitions/0/messages?wait=forever", "", "", 400, "invalid"},
		{"stream unknown topic", "GET", base + "/v1/topics/nope/stream", "", "", 404, "not_found"},
		{"stream unknown partition", "GET", base + "/v1/topics/t/stream?partition=5", "", "", 404, "not_found"},
		{"stream bad from", "GET", base + "/v1/topics/t/stream?from=yesterday", "", "", 400, "invalid"},
		{"create topic malformed", "POST", base + "/v1/topics", "application/json", `{"name":`, 400, "invalid"},
		{"create topic unknown key", "POST", base + "/v1/topics", "application/json", `{"name":"u","config":{"colour":"red"}}`, 400, "invalid"},
		{"create existing topic", "POST", base + "/v1/topics", "application/json", `{"name":"t","partitions":2}`, 409, "exists"},
		{"update nothing", "PATCH", base + "/v1/topics/t", "application/json", `{}`, 400, "invalid"},
		{"delete unknown topic", "DELETE", base + "/v1/topics/nope", "", "", 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := call(t, c.method, c.url, c.ctype, []byte(c.body))
			require.Equal(t, c.status, a.status, "%s", a.body)
			require.Equal(t, c.code, a.errCode(t), "%s", a.body)
		})
	}

	t.Run("stream bad Last-Event-ID", func(t *testing.T) {
		a := call(t, "GET", base+"/v1/topics/t/stream?partition=0", "", nil, "Last-Event-ID: 1:5")
		require.Equal(t, http.StatusBadRequest, a.status, "%s", a.body)
		a = call(t, "GET", base+"/v1/topics/t/stream", "", nil, "Last-Event-ID: garbage")
		require.Equal(t, http.StatusBadRequest, a.status, "%s", a.body)
	})
	t.Run("wrong method", func(t *testing.T) {
		a := call(t, "PUT", base+"/v1/topics", "", nil)
		require.Equal(t, http.StatusMethodNotAllowed, a.status)
		require.Equal(t, "method_not_allowed", a.errCode(t))
		require.Contains(t, a.header.Get("Allow"), "POST")
		a = call(t, "GET", pub, "", nil)
		require.Equal(t, http.StatusMethodNotAllowed, a.status)
		a = call(t, "GET", base+"/v1/nothing", "", nil)
		require.Equal(t, http.StatusNotFound, a.status)
		require.Equal(t, "not_found", a.errCode(t))
	})

	// Nothing of the refused requests was stored.
	a := call(t, "GET", base+"/v1/topics/t", "", nil)
	require.Equal(t, http.StatusOK, a.status)
	for _, p := range a.json(t)["partitions"].([]any) {
		require.EqualValues(t, 0, p.(map[string]any)["end_offset"])
	}

	// A bad line in the middle of an NDJSON body: the chunks before it
	// (two records each here) are stored, its own is not, and the answer
	// names the line and lists what was stored.
	body := `{"value":"1"}` + "\n" + `{"value":"2"}` + "\n" + `{"value":"3"}` + "\n" + `{"value":"4"}` + "\n" +
		`{"value":"5"}` + "\n" + `{"value": oops}` + "\n" + `{"value":"7"}` + "\n"
	a = call(t, "POST", pub+"?partition=0", "application/x-ndjson", []byte(body))
	require.Equal(t, http.StatusBadRequest, a.status, "%s", a.body)
	v := a.json(t)
	require.EqualValues(t, 4, v["count"])
	require.Len(t, v["records"], 4)
	require.EqualValues(t, 6, v["error"].(map[string]any)["line"])
	require.Contains(t, v["error"].(map[string]any)["message"], "line 6")
	a = call(t, "GET", base+"/v1/topics/t/partitions/0/messages", "", nil)
	require.Equal(t, http.StatusOK, a.status)
	require.Len(t, a.json(t)["records"], 4)
	require.EqualValues(t, 4, a.json(t)["end_offset"])

	// An NDJSON body past the bound: what was stored before it is
	// listed beside the error.
	line := `{"value":"` + strings.Repeat("y", 500) + `"}` + "\n"
	a = call(t, "POST", pub+"?partition=1", "application/x-ndjson", []byte(strings.Repeat(line, 200)))
	require.Equal(t, http.StatusRequestEntityTooLarge, a.status, "%s", a.body)
	v = a.json(t)
	require.Equal(t, "too_large", v["error"].(map[string]any)["code"])
	require.Positive(t, v["count"])
	require.Len(t, v["records"], int(v["count"].(float64)))

	// A JSON body is checked whole: its bad record stores nothing.
	a = call(t, "POST", pub+"?partition=0", "application/json", []byte(`{"records":[{"value":"a"},{"value":"b"},{"key":1}]}`))
	require.Equal(t, http.StatusBadRequest, a.status, "%s", a.body)
	require.Contains(t, string(a.body), "record 3")
	a = call(t, "GET", base+"/v1/topics/t/partitions/0/messages?offset=latest", "", nil)
	require.EqualValues(t, 4, a.json(t)["end_offset"])
}

// TestStalledStreamIsCut: an event-stream client that stops reading
// while much is published is cut, and only it: another client publishes
// and fetches meanwhile, and the stream's session and goroutines go.
func TestStalledStreamIsCut(t *testing.T) {
	e := startBroker(t, nil)
	base := gatewayServer(t, e, httpgw.Config{StreamWriteTimeout: 500 * time.Millisecond})
	createTopic(t, base, "t", 1)

	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	_, err = fmt.Fprintf(c, "GET /v1/topics/t/stream HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	// Read the answer's header, then nothing more.
	br := bufio.NewReaderSize(c, 4096)
	status, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, status, "200")
	stalled := c.LocalAddr().String()
	require.True(t, hasSession(e, stalled))
	require.EqualValues(t, 1, streams(e))

	// Publish far more than the socket buffers hold, through the HTTP
	// gateway, 1 MiB per request.
	rec := `{"value":"` + strings.Repeat("z", 900) + `"}` + "\n"
	body := []byte(strings.Repeat(rec, 1100))
	i := 0
	for ; hasSession(e, stalled) || streams(e) > 0; i++ {
		require.Less(t, i, 400, "the stalled stream was not cut")
		a := call(t, "POST", base+"/v1/topics/t/messages?acks=none", "application/x-ndjson", body)
		require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	}

	t.Logf("cut after %d requests", i)
	// The broker serves as before.
	a := call(t, "POST", base+"/v1/topics/t/messages", "", []byte("after"))
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	off := int64(a.json(t)["records"].([]any)[0].(map[string]any)["offset"].(float64))
	a = call(t, "GET", fmt.Sprintf("%s/v1/topics/t/partitions/0/messages?offset=%d", base, off), "", nil)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	require.Contains(t, string(a.body), `"value":"after"`)
}

// hasSession reports whether a gateway session of the client at remote
// is open.
func hasSession(e *engine.Engine, remote string) bool {
	for _, c := range e.Connections() {
		if c.Remote == remote {
			return true
		}
	}
	return false
}

// streams is the gateway's count of open HTTP streams.
func streams(e *engine.Engine) int {
	var b bytes.Buffer
	e.Gateway().Metrics().WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, `ratatoskr_gateway_streams{via="http"} `); ok {
			var n int
			_, _ = fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// TestShutdownEndsStreams: a broker shutting down ends its event
// streams (Gateway.Done), and does not wait on them.
func TestShutdownEndsStreams(t *testing.T) {
	e := startBroker(t, nil)
	base := "http://" + e.HTTPAddr()
	createTopic(t, base, "t", 1)
	s := followCurl(t, base+"/v1/topics/t/stream")
	require.EqualValues(t, 1, streams(e))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(ctx))
	for s.sc.Scan() { // the stream ends: curl sees its end and exits
	}
	require.NoError(t, s.cmd.Wait())
	s.cmd.Process = nil
	require.EqualValues(t, 0, streams(e))
}

// TestNoAnonymousGatewayBeyondLoopback: a broker with authentication off
// whose HTTP listener is not on loopback serves no /v1/, unless
// anonymous access is allowed.
func TestNoAnonymousGatewayBeyondLoopback(t *testing.T) {
	for _, allow := range []bool{false, true} {
		e := startBroker(t, func(c *engine.Config) { c.HTTPAddr, c.AllowAnonymous = "0.0.0.0:0", allow })
		_, port, err := net.SplitHostPort(e.HTTPAddr())
		require.NoError(t, err)
		a := call(t, "GET", "http://127.0.0.1:"+port+"/v1/topics", "", nil)
		if allow {
			require.Equal(t, http.StatusOK, a.status, "%s", a.body)
		} else {
			require.Equal(t, http.StatusNotFound, a.status, "%s", a.body)
		}
	}
}

// A publish that fails in part says of every record of the failed chunk
// whether it was stored: records of another partition stored after the
// one that failed are listed, so a client retries only what was not.
func TestPartialFailureListsEveryRecord(t *testing.T) {
	e := startBroker(t, nil)
	base := gatewayServer(t, e, httpgw.Config{})
	createTopic(t, base, "t", 2)
	body := []byte(`{"records":[{"value":"a","partition":5},{"value":"b","partition":0},{"value":"c","partition":0}]}`)
	for _, q := range []string{"", "?acks=ranges"} {
		a := call(t, "POST", base+"/v1/topics/t/messages"+q, "application/json", body)
		require.Equal(t, 404, a.status, "%s", a.body)
		require.Equal(t, "not_found", a.errCode(t))
		got := a.json(t)
		require.EqualValues(t, 2, got["count"], "%s", a.body)
		if q == "" {
			require.Equal(t, []any{
				map[string]any{"partition": -1.0, "offset": -1.0},
				map[string]any{"partition": 0.0, "offset": 0.0},
				map[string]any{"partition": 0.0, "offset": 1.0},
			}, got["records"])
		} else {
			require.Equal(t, []any{
				map[string]any{"partition": -1.0, "offset": -1.0, "count": 1.0},
				map[string]any{"partition": 0.0, "offset": 2.0, "count": 2.0},
			}, got["ranges"])
		}
	}
}
