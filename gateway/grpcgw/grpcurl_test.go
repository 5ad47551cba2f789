package grpcgw_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// grpcurlPath finds grpcurl: ./bin/grpcurl of the repository, or PATH.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	local := filepath.Join(filepath.Dir(file), "..", "..", "bin", "grpcurl")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	p, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatalf("grpcurl is missing (neither %s nor on PATH): make grpcurl installs it", local)
	}
	return p
}

func grpcurl(t *testing.T, addr string, args ...string) string {
	t.Helper()
	// grpcurl [flags] address [method]: the flags, then the address.
	argv := []string{"-plaintext"}
	method := ""
	if last := args[len(args)-1]; !strings.HasPrefix(last, "-") && !strings.HasPrefix(last, "{") {
		args, method = args[:len(args)-1], last
	}
	argv = append(append(argv, args...), addr)
	if method != "" {
		argv = append(argv, method)
	}
	cmd := exec.CommandContext(testCtx(t), grpcurlPath(t), argv...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "grpcurl %v: %s", args, out)
	return string(out)
}

// grpcurl, with no .proto file, finds the services through reflection,
// checks health, publishes (bytes as base64 in JSON) and fetches back.
func TestGrpcurlReflectionHealthPublishFetch(t *testing.T) {
	e := startBroker(t, nil)
	addr := e.GRPCAddr()

	list := grpcurl(t, addr, "list")
	for _, svc := range []string{"ratatoskr.v1.Broker", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		require.Contains(t, list, svc)
	}
	require.Contains(t, grpcurl(t, addr, "-d", `{"service":"ratatoskr.v1.Broker"}`, "grpc.health.v1.Health/Check"), `"SERVING"`)

	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	// Both records keyed: a keyed and an unkeyed record of one request
	// are routed apart and may be stored in either order (docs/GRPC.md).
	req := `{"topic":"curl","records":[{"key":"` + b64("k") + `","value":"` + b64("hello") + `"},{"key":"` + b64("k") + `","value":"` + b64("world") +
		`","headers":[{"key":"h","value":"` + b64("v") + `"}]}]}`
	var ack struct {
		Partitions []int    `json:"partitions"`
		Offsets    []string `json:"offsets"` // int64 is a string in JSON
	}
	require.NoError(t, json.Unmarshal([]byte(grpcurl(t, addr, "-d", req, "ratatoskr.v1.Broker/Publish")), &ack))
	require.Equal(t, []int{0, 0}, ack.Partitions)
	require.Equal(t, []string{"0", "1"}, ack.Offsets)

	var fetched struct {
		Records []struct {
			Offset  string `json:"offset"`
			Key     string `json:"key"`
			Value   string `json:"value"`
			Headers []struct{ Key, Value string }
		} `json:"records"`
		Next string `json:"next"`
	}
	out := grpcurl(t, addr, "-d", `{"topic":"curl","partition":0,"start":{"earliest":true}}`, "ratatoskr.v1.Broker/Fetch")
	require.NoError(t, json.Unmarshal([]byte(out), &fetched), out)
	require.Len(t, fetched.Records, 2)
	require.Equal(t, b64("hello"), fetched.Records[0].Value)
	require.Equal(t, "1", fetched.Records[1].Offset)
	require.Equal(t, b64("k"), fetched.Records[1].Key)
	require.Equal(t, b64("world"), fetched.Records[1].Value)
	require.Equal(t, "h", fetched.Records[1].Headers[0].Key)
	require.Equal(t, b64("v"), fetched.Records[1].Headers[0].Value)
	require.Equal(t, "2", fetched.Next)
}
