package wsgw_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
)

// startBroker runs a broker on 127.0.0.1 port 0 for the test.
func startBroker(t *testing.T, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	return brokertest.Start(t, func(cfg *engine.Config) {
		cfg.AutoCreateTopics = false
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// serve mounts the handler at wsgw.Path on a test server, with page (if
// not empty) at /.
func serve(t *testing.T, e *engine.Engine, mutate func(*wsgw.Config), page string) *httptest.Server {
	t.Helper()
	s, _ := serveHandler(t, e, mutate, page)
	return s
}

// serveHandler is serve, returning the handler too.
func serveHandler(t *testing.T, e *engine.Engine, mutate func(*wsgw.Config), page string) (*httptest.Server, *wsgw.Handler) {
	t.Helper()
	cfg := wsgw.Config{Gateway: e.Gateway(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mutate != nil {
		mutate(&cfg)
	}
	h := wsgw.New(cfg)
	mux := http.NewServeMux()
	mux.Handle(wsgw.Path, h)
	if page != "" {
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, page)
		})
	}
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s, h
}

// metric is the value of a sample the handler writes, or -1.
func metric(h *wsgw.Handler, series string) float64 {
	var b bytes.Buffer
	h.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func wsURL(s *httptest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") + wsgw.Path }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial opens a WebSocket; header may carry credentials.
func dial(t *testing.T, s *httptest.Server, header http.Header) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.Dial(testCtx(t), wsURL(s), &websocket.DialOptions{HTTPHeader: header,
		Subprotocols: []string{wsgw.Subprotocol}})
	require.NoError(t, err)
	if resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.Equal(t, wsgw.Subprotocol, ws.Subprotocol())
	ws.SetReadLimit(-1)
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

// obj is a JSON frame as a map.
type obj = map[string]any

func sendJSON(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, ws.Write(testCtx(t), websocket.MessageText, b))
}

func readJSON(t *testing.T, ws *websocket.Conn) obj {
	t.Helper()
	typ, b, err := ws.Read(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, websocket.MessageText, typ, "a JSON command's answers are text frames")
	var m obj
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	return m
}

// callJSON sends a JSON command and returns its answer (deliveries that
// come first are skipped: the tests ask for them separately).
func callJSON(t *testing.T, ws *websocket.Conn, cmd obj) obj {
	t.Helper()
	sendJSON(t, ws, cmd)
	for {
		m := readJSON(t, ws)
		if m["type"] != "messages" {
			require.EqualValues(t, fmt.Sprint(cmd["id"]), fmt.Sprint(m["id"]), "%v", m)
			return m
		}
	}
}

func sendBin(t *testing.T, ws *websocket.Conn, frame []byte) {
	t.Helper()
	require.NoError(t, ws.Write(testCtx(t), websocket.MessageBinary, frame))
}

// readBin reads a binary frame; its bytes stay valid (Read allocates).
func readBin(t *testing.T, ws *websocket.Conn) wsproto.Reply {
	t.Helper()
	typ, b, err := ws.Read(testCtx(t))
	require.NoError(t, err)
	require.Equal(t, websocket.MessageBinary, typ, "a binary command's answers are binary frames")
	var r wsproto.Reply
	require.NoError(t, wsproto.DecodeReply(b, &r))
	return r
}

// closeStatus reads until the socket ends and returns its close code.
func closeStatus(t *testing.T, ws *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	for {
		_, _, err := ws.Read(testCtx(t))
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return websocket.CloseStatus(err), err.Error()
		}
	}
}

// adminCred is startSecure's admin user.
var adminCred = gateway.Credentials{User: "root", Password: "root password", Remote: "127.0.0.1:1"}

// startSecure runs a broker with authentication on, and an admin user
// (adminCred) and a plain one, alice, who may use the topics starting
// with "alice".
func startSecure(t *testing.T) *engine.Engine {
	t.Helper()
	e := startBroker(t, func(c *engine.Config) { c.Auth = true })
	sec := e.Security()
	require.NoError(t, sec.AddUser(adminCred.User, "", auth.RoleAdmin, adminCred.Password))
	require.NoError(t, sec.AddUser("alice", "", auth.RoleUser, "alice password"))
	_, err := sec.AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "alice", Pattern: auth.PatternPrefix,
		Ops: auth.OpPublish | auth.OpSubscribe})
	require.NoError(t, err)
	return e
}
