package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// get sends GET path to a started server with token (none when "").
func get(t *testing.T, s *Server, token, path string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.Addr()+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b), res.Header
}

// TestAuth: everything but the probes and the dashboard's files needs the
// admin token as a bearer token; a refusal is 401 with WWW-Authenticate.
func TestAuth(t *testing.T) {
	b := newFake()
	h := handler(t, b)
	for _, path := range []string{"/api/v1/topics", "/api/v1/groups", "/api/v1/connections", "/api/v1/shards", "/api/v1/nope",
		"/metrics", "/api/v1/health", "/api/v1/metrics/history"} {
		fails(t, h, "", "GET", path, "", 401, "unauthorized", "missing credentials")
		_, _, hdr := call(h, "", "GET", path, "")
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer")
	}
	fails(t, h, "", "POST", "/api/v1/topics", `{"name":"x"}`, 401, "unauthorized", "missing credentials")
	fails(t, h, "", "DELETE", "/api/v1/topics/x", "", 401, "unauthorized", "missing credentials")
	fails(t, h, "test-tokeN", "GET", "/api/v1/topics", "", 401, "unauthorized", "not the admin token")
	fails(t, h, "test-tokeN", "PATCH", "/api/v1/topics/x", `{"retention":"1h"}`, 401, "unauthorized", "not the admin token")
	require.Empty(t, b.created, "refused before the broker is asked")

	s := serve(t, b, nil)
	code, _, _ := get(t, s, "Basic dGVzdC10b2tlbg==", "/api/v1/topics")
	require.Equal(t, 401, code, "only a bearer token is accepted")
	code, _, _ = get(t, s, "Bearer "+testToken, "/api/v1/topics")
	require.Equal(t, 200, code)
}

// TestOpenEndpointsAndNotFound: the probes and the dashboard need no
// token; unknown paths are 404, as JSON under /api/v1/.
func TestOpenEndpointsAndNotFound(t *testing.T) {
	b := newFake()
	s := serve(t, b, nil)
	code, body, _ := get(t, s, "", "/healthz")
	require.Equal(t, 200, code)
	require.Equal(t, "ok\n", body)
	code, body, hdr := get(t, s, "", "/")
	require.Equal(t, 200, code)
	require.Contains(t, hdr.Get("Content-Type"), "text/html")
	require.Contains(t, hdr.Get("Content-Security-Policy"), "default-src 'self'")
	require.Contains(t, body, `<script src="app.js">`)
	for _, f := range []string{"/app.js", "/style.css"} {
		code, body, _ = get(t, s, "", f)
		require.Equal(t, 200, code, f)
		require.NotEmpty(t, body)
	}
	code, body, _ = get(t, s, "", "/readyz")
	require.Equal(t, 200, code, "probes need no token")
	require.Equal(t, "ready\n", body)
	code, _, _ = get(t, s, "", "/missing.js")
	require.Equal(t, 404, code)

	h := handler(t, b)
	fails(t, h, testToken, "GET", "/api/v1/nope", "", 404, "not_found", "GET /api/v1/nope")
	fails(t, h, testToken, "PUT", "/api/v1/topics/x", "{}", 404, "not_found", "PUT /api/v1/topics/x")
}

// TestHealthzWhileDraining: the liveness probe says when the broker is
// shutting down.
func TestHealthzWhileDraining(t *testing.T) {
	b := newFake()
	b.draining = true
	code, body, _ := call(handler(t, b), "", "GET", "/healthz", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "shutting down\n", body)
}

// TestMetricsEndpoint: /metrics is the broker's text, as Prometheus reads it.
func TestMetricsEndpoint(t *testing.T) {
	b := newFake()
	b.metrics = "ratatoskr_ready 1\n"
	code, body, hdr := call(handler(t, b), testToken, "GET", "/metrics", "")
	require.Equal(t, 200, code)
	require.Equal(t, "ratatoskr_ready 1\n", body)
	require.Equal(t, "text/plain; version=0.0.4; charset=utf-8", hdr.Get("Content-Type"))
}

// TestPprofOnlyWhenAsked: the profiler is served with Config.Pprof only,
// and behind the token.
func TestPprofOnlyWhenAsked(t *testing.T) {
	b := newFake()
	off := New(Config{}, b).routes(testToken)
	code, _, _ := call(off, testToken, "GET", "/debug/pprof/", "")
	require.Equal(t, 404, code)
	on := New(Config{Pprof: true}, b).routes(testToken)
	code, _, _ = call(on, "", "GET", "/debug/pprof/", "")
	require.Equal(t, 401, code)
	code, body, _ := call(on, testToken, "GET", "/debug/pprof/", "")
	require.Equal(t, 200, code)
	require.True(t, strings.Contains(body, "goroutine"), body)
}

func TestDashboardURL(t *testing.T) {
	require.Equal(t, "http://127.0.0.1:8080/", DashboardURL("127.0.0.1:8080", ""))
	require.Equal(t, "http://127.0.0.1:8080/#token=abc", DashboardURL("127.0.0.1:8080", "abc"))
}

// TestNoAddressServesNothing: without an address Start listens nowhere,
// and Shutdown is harmless.
func TestNoAddressServesNothing(t *testing.T) {
	s := New(Config{}, newFake())
	require.NoError(t, s.Start())
	require.Empty(t, s.Addr())
	require.Empty(t, s.Token())
	require.Nil(t, s.Handler())
	s.Shutdown(t.Context())
}
