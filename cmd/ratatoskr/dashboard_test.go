package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDashboardURL: the broker's log names the dashboard's address and
// where the token is, never the token; `ratatoskr dashboard-url` prints the
// address with it, and that address opens the admin API.
func TestDashboardURL(t *testing.T) {
	data := t.TempDir()
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	tokBytes, err := os.ReadFile(filepath.Join(data, "admin.token"))
	require.NoError(t, err)
	tok := strings.TrimSpace(string(tokBytes))
	require.NotContains(t, s.logs.String(), tok, "the token is not logged")
	require.Contains(t, s.logs.String(), `msg=dashboard url=http://`+s.httpAddr+"/ token_from="+data+"/admin.token")

	out, errOut, code := runCLI(t, nil, "dashboard-url", "--data", data, "--http-addr", s.httpAddr)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "http://"+s.httpAddr+"/#token="+tok+"\n", out)
	req, err := http.NewRequest(http.MethodGet, "http://"+s.httpAddr+"/api/v1/health", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimPrefix(strings.TrimSpace(out), "http://"+s.httpAddr+"/#token="))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the printed token opens the admin API")

	// The environment as serve reads it; a wildcard host becomes one a
	// browser can open; a configured token wins over the file.
	out, errOut, code = runCLIEnv(t, []string{"RATATOSKR_DATA=" + data, "RATATOSKR_HTTP_ADDR=0.0.0.0:8089"}, "dashboard-url")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "http://127.0.0.1:8089/#token="+tok+"\n", out)
	out, errOut, code = runCLIEnv(t, []string{"RATATOSKR_ADMIN_TOKEN=given", "RATATOSKR_DATA=" + data}, "dashboard-url")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "http://127.0.0.1:8080/#token=given\n", out)

	_, errOut, code = runCLI(t, nil, "dashboard-url", "--data", t.TempDir())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no admin token at ")
	_, errOut, code = runCLI(t, nil, "dashboard-url", "--data", data, "--http-addr", "")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "serves no dashboard")
}
