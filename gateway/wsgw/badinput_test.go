package wsgw_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestAuth: credentials at the upgrade are refused with an HTTP status;
// a refused or missing auth command, or none at all, closes the socket
// with CloseUnauthenticated; a principal's forbidden topic is an error
// reply on a socket that stays open.
func TestAuth(t *testing.T) {
	e := startSecure(t)
	ctx := testCtx(t)
	admin, err := e.Gateway().Dedicated(ctx, "test", adminCred)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	require.NoError(t, admin.CreateTopic(ctx, "alice.in", client.TopicConfig{}))
	require.NoError(t, admin.CreateTopic(ctx, "secret", client.TopicConfig{}))
	s := serve(t, e, func(c *wsgw.Config) { c.AuthTimeout = 300 * time.Millisecond }, "")

	for name, h := range map[string]string{"wrong password": basic("alice", "nope"), "unknown token": "Bearer nope",
		"other scheme": "Digest x"} {
		_, resp, err := websocket.Dial(ctx, wsURL(s), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {h}}})
		require.Error(t, err, name)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, name)
		_ = resp.Body.Close()
	}

	ws := dial(t, s, nil)
	sendJSON(t, ws, obj{"op": "auth", "id": 1, "user": "alice", "password": "wrong"})
	code, reason := closeStatus(t, ws)
	require.Equal(t, wsgw.CloseUnauthenticated, code, reason)

	ws = dial(t, s, nil)
	sendBin(t, ws, wsproto.AppendAuthToken(nil, 1, "not a token"))
	code, _ = closeStatus(t, ws)
	require.Equal(t, wsgw.CloseUnauthenticated, code)

	ws = dial(t, s, nil)
	sendJSON(t, ws, obj{"op": "subscribe", "id": 1, "topic": "alice.in"})
	code, reason = closeStatus(t, ws)
	require.Equal(t, wsgw.CloseUnauthenticated, code)
	require.Contains(t, reason, "send an auth command first")

	ws = dial(t, s, nil) // says nothing
	code, _ = closeStatus(t, ws)
	require.Equal(t, wsgw.CloseUnauthenticated, code)

	// Alice, by header and by auth command: her topic works, another is
	// forbidden, and the socket stays open.
	byHeader := dial(t, s, http.Header{"Authorization": {basic("alice", "alice password")}})
	r := callJSON(t, byHeader, obj{"op": "publish", "id": "p0", "topic": "alice.in", "records": []obj{{"value": "x"}}})
	require.Equal(t, "ack", r["type"], "%v", r)

	alice := dial(t, s, nil)
	r = callJSON(t, alice, obj{"op": "auth", "id": "a", "user": "alice", "password": "alice password"})
	require.Equal(t, "ok", r["type"], "%v", r)
	r = callJSON(t, alice, obj{"op": "publish", "id": "p", "topic": "alice.in", "records": []obj{{"value": "x"}}})
	require.Equal(t, "ack", r["type"], "%v", r)
	r = callJSON(t, alice, obj{"op": "publish", "id": "q", "topic": "secret", "records": []obj{{"value": "x"}}})
	require.Equal(t, "error", r["type"], "%v", r)
	require.EqualValues(t, wire.CodeNotAuthorized, r["code"])
	require.Equal(t, "denied", r["kind"])
	r = callJSON(t, alice, obj{"op": "subscribe", "id": "s", "topic": "secret"})
	require.EqualValues(t, wire.CodeNotAuthorized, r["code"], "%v", r)
	r = callJSON(t, alice, obj{"op": "auth", "id": "again", "user": "alice", "password": "alice password"})
	require.EqualValues(t, wire.CodeInvalidArgument, r["code"], "auth comes first only: %v", r)
	r = callJSON(t, alice, obj{"op": "subscribe", "id": "s2", "topic": "alice.in"})
	require.Equal(t, "ok", r["type"], "the socket still works: %v", r)
}

func basic(user, password string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	r.SetBasicAuth(user, password)
	return r.Header.Get("Authorization")
}

// TestBadInput: malformed and unknown commands are answered with errors
// and the socket goes on; an oversized message closes it with 1009; a
// plain HTTP request is told to upgrade.
func TestBadInput(t *testing.T) {
	e := startBroker(t, nil)
	s := serve(t, e, func(c *wsgw.Config) { c.MaxMessageBytes = 64 << 10 }, "")
	ws := dial(t, s, nil)

	require.NoError(t, ws.Write(testCtx(t), websocket.MessageText, []byte(`{"op":"publish",`)))
	r := readJSON(t, ws)
	require.Equal(t, "error", r["type"])
	require.EqualValues(t, wire.CodeMalformed, r["code"])
	require.Nil(t, r["id"])

	for _, tc := range []struct {
		cmd  obj
		code wire.Code
	}{
		{obj{"op": "fly", "id": 1}, wire.CodeUnknownType},
		{obj{"id": 2}, wire.CodeUnknownType},
		{obj{"op": "subscribe", "id": 3, "topic": "nope"}, wire.CodeUnknownTopic},
		{obj{"op": "publish", "id": 4, "topic": "nope", "records": []obj{{"value": "x"}}}, wire.CodeUnknownTopic},
		{obj{"op": "publish", "id": 5, "topic": "nope"}, wire.CodeInvalidArgument},
		{obj{"op": "publish", "id": 6, "topic": "t", "encoding": "base64", "records": []obj{{"value": "%%%"}}}, wire.CodeInvalidArgument},
		{obj{"op": "subscribe", "id": 7, "topic": "t", "from": "yesterday"}, wire.CodeInvalidArgument},
		{obj{"op": "subscribe", "id": 8, "topic": "bad topic name!"}, wire.CodeInvalidArgument},
		{obj{"op": "create_topic", "id": 9, "topic": "x", "config": obj{"colour": "red"}}, wire.CodeInvalidArgument},
		{obj{"op": "describe_topic", "id": 10, "topic": "nope"}, wire.CodeUnknownTopic},
		{obj{"op": "subscribe", "id": []int{1}, "topic": "t"}, wire.CodeInvalidArgument},
	} {
		sendJSON(t, ws, tc.cmd)
		r := readJSON(t, ws)
		require.Equal(t, "error", r["type"], "%v", tc.cmd)
		require.EqualValues(t, tc.code, r["code"], "%v: %v", tc.cmd, r)
	}

	// Binary: too short for an id, an unknown op, a truncated body, a
	// count past the frame; each is answered, with the id when it could
	// be read.
	for _, tc := range []struct {
		frame []byte
		id    uint32
		code  wire.Code
	}{
		{[]byte{0x04, 0x00}, 0, wire.CodeMalformed},
		{wsproto.AppendHead(nil, 0x7f, 11), 11, wire.CodeUnknownType},
		{wsproto.AppendHead(nil, wsproto.OpSubscribe, 12), 12, wire.CodeMalformed},
		{append(wsproto.AppendStr16(wsproto.AppendHead(nil, wsproto.OpPublish, 13), "t"), 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff), 13, wire.CodeMalformed},
		{wsproto.AppendTopicCommand(nil, wsproto.OpDescribeTopic, 14, "nope", 0), 14, wire.CodeUnknownTopic},
	} {
		sendBin(t, ws, tc.frame)
		r := readBin(t, ws)
		require.Equal(t, wsproto.OpError, r.Op, "%x", tc.frame)
		require.Equal(t, tc.id, r.ID)
		require.Equal(t, tc.code, r.Code, "%x: %s", tc.frame, r.Message)
	}

	// The socket still works.
	r = callJSON(t, ws, obj{"op": "create_topic", "id": "ok", "topic": "t"})
	require.Equal(t, "ok", r["type"], "%v", r)

	// A message past MaxMessageBytes closes the socket with 1009.
	big := strings.Repeat("x", 65<<10)
	require.NoError(t, ws.Write(testCtx(t), websocket.MessageText, []byte(`{"op":"publish","topic":"t","records":[{"value":"`+big+`"}]}`)))
	code, reason := closeStatus(t, ws)
	require.Equal(t, websocket.StatusMessageTooBig, code, reason)

	// A page of another origin may not open a socket (unless
	// OriginPatterns names it).
	_, resp, err := websocket.Dial(testCtx(t), wsURL(s), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://elsewhere.example"}}})
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	_ = resp.Body.Close()

	resp, err = http.Get(s.URL + wsgw.Path)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
}
