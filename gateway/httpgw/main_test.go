package httpgw_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/gateway/httpgw"
)

// TestMain fails the package when a test leaves a stream's or a
// session's goroutine behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := leftGoroutines(30 * time.Second); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after the tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// leftGoroutines waits up to d for the gateway's and the client's
// goroutines to end, and returns the stacks of those that did not.
func leftGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "ratatoskr/client.") || strings.Contains(g, "gateway/httpgw.") {
				if !strings.Contains(g, "leftGoroutines") {
					left = append(left, g)
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const adminToken = "test-admin-token-0123456789abcdef"

// startBroker runs a broker on 127.0.0.1 port 0, with its HTTP listener
// (and so the gateway at /v1/) on another.
func startBroker(t *testing.T, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	return brokertest.Start(t, func(cfg *engine.Config) {
		cfg.HTTPAddr, cfg.AdminToken, cfg.AutoCreateTopics = "127.0.0.1:0", adminToken, false
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// gatewayServer serves a handler of the broker's gateway with cfg on a
// server of the test's own, for limits the engine's mount does not set.
func gatewayServer(t *testing.T, e *engine.Engine, cfg httpgw.Config) string {
	t.Helper()
	cfg.Gateway = e.Gateway()
	srv := httptest.NewServer(httpgw.New(cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// answer is an HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal(a.body, &v), "body %s", a.body)
	return v
}

// errCode is the error body's code.
func (a answer) errCode(t *testing.T) string {
	t.Helper()
	e, ok := a.json(t)["error"].(map[string]any)
	require.True(t, ok, "no error in %s", a.body)
	return e["code"].(string)
}

// call makes a request; header holds "Name: value" pairs.
func call(t *testing.T, method, url, ctype string, body []byte, header ...string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	require.NoError(t, err)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// createTopic creates a topic through the gateway.
func createTopic(t *testing.T, base, name string, partitions int, header ...string) {
	t.Helper()
	a := call(t, "POST", base+"/v1/topics", "application/json",
		fmt.Appendf(nil, `{"name":%q,"partitions":%d,"storage":"disk","config":{"fsync":"never"}}`, name, partitions), header...)
	require.Equal(t, http.StatusCreated, a.status, "%s", a.body)
}
