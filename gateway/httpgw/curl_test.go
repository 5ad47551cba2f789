package httpgw_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// runCurl runs curl with args and returns what it printed.
func runCurl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "curl", append([]string{"-sS", "--max-time", "30"}, args...)...).Output()
	require.NoError(t, err, "curl %v: %s", args, out)
	return string(out)
}

// event is one record of a stream, as curl printed it.
type event struct {
	id     string
	record struct {
		Partition     int32
		Offset        int64
		Key           *string
		Value         string
		ValueEncoding string `json:"value_encoding"`
		Headers       []struct{ Key, Value string }
	}
}

// sseCurl follows a stream with curl -N; next returns its events one by
// one, and stop ends curl as a client that goes away does.
type sseCurl struct {
	cmd *exec.Cmd
	sc  *bufio.Scanner
}

func followCurl(t *testing.T, url string, header ...string) *sseCurl {
	t.Helper()
	args := []string{"-sS", "-N", url}
	for _, h := range header {
		args = append(args, "-H", h)
	}
	cmd := exec.CommandContext(t.Context(), "curl", args...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	s := &sseCurl{cmd: cmd, sc: bufio.NewScanner(out)}
	t.Cleanup(s.stop)
	// The stream's first line, a comment, says it is open: from then on
	// every record published is the stream's.
	require.True(t, s.sc.Scan(), "the stream did not open: %v", s.sc.Err())
	require.Equal(t, ": open", s.sc.Text())
	return s
}

func (s *sseCurl) next(t *testing.T) event {
	t.Helper()
	var ev event
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			t.Fatalf("unexpected event %q", line)
		case strings.HasPrefix(line, "data: "):
			require.NoError(t, json.Unmarshal([]byte(line[6:]), &ev.record))
		case line == "" && ev.id != "":
			return ev
		}
	}
	t.Fatalf("the stream ended: %v", s.sc.Err())
	return ev
}

func (s *sseCurl) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// TestCurl drives the gateway as a user does, with curl: create a topic,
// publish JSON, NDJSON and a raw body, fetch, follow the stream, and
// resume it after a disconnect with Last-Event-ID: the rest arrives in
// order, none twice and none missing.
func TestCurl(t *testing.T) {
	e := startBroker(t, nil)
	base := "http://" + e.HTTPAddr()
	topic := base + "/v1/topics/orders"

	out := runCurl(t, "-X", "POST", base+"/v1/topics", "-H", "Content-Type: application/json",
		"-d", `{"name":"orders","partitions":2,"storage":"disk"}`, "-w", "%{http_code}")
	require.True(t, strings.HasSuffix(out, "201"), out)

	out = runCurl(t, topic+"/messages", "-H", "Content-Type: application/json",
		"-d", `{"key":"k1","value":"one","headers":{"trace":"t1"},"partition":0}`)
	require.JSONEq(t, `{"count":1,"records":[{"partition":0,"offset":0}]}`, out)

	out = runCurl(t, topic+"/messages?encoding=base64", "-H", "Content-Type: application/json",
		"-d", `{"records":[{"value":"`+base64.StdEncoding.EncodeToString([]byte{0xff, 0, 1})+`","partition":1},{"value":"dHdv","partition":0}]}`)
	require.JSONEq(t, `{"count":2,"records":[{"partition":1,"offset":0},{"partition":0,"offset":1}]}`, out)

	nd := filepath.Join(t.TempDir(), "records.ndjson")
	require.NoError(t, os.WriteFile(nd, []byte(`{"value":"three","partition":0}
{"value":{"n":4},"partition":1}

{"value":"five","partition":1}
`), 0o600))
	out = runCurl(t, topic+"/messages?acks=ranges", "-H", "Content-Type: application/x-ndjson", "--data-binary", "@"+nd)
	require.JSONEq(t, `{"count":3,"ranges":[{"partition":0,"offset":2,"count":1},{"partition":1,"offset":1,"count":2}]}`, out)

	out = runCurl(t, topic+"/messages?key=raw&partition=0", "-H", "Ratatoskr-Header-Trace-Id: t6", "--data-binary", "six\n")
	require.JSONEq(t, `{"count":1,"records":[{"partition":0,"offset":3}]}`, out)

	out = runCurl(t, topic+"/partitions/0/messages?offset=earliest&wait=100ms")
	var f struct {
		Records []struct {
			Offset  int64
			Key     *string
			Value   string
			Headers []struct{ Key, Value string }
		}
		NextOffset  int64 `json:"next_offset"`
		StartOffset int64 `json:"start_offset"`
		EndOffset   int64 `json:"end_offset"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &f), out)
	require.Len(t, f.Records, 4)
	require.Equal(t, []string{"one", "two", "three", "six\n"}, []string{f.Records[0].Value, f.Records[1].Value, f.Records[2].Value, f.Records[3].Value})
	require.Equal(t, "k1", *f.Records[0].Key)
	require.Equal(t, "trace", f.Records[0].Headers[0].Key)
	require.Equal(t, "trace-id", f.Records[3].Headers[0].Key)
	require.Equal(t, "raw", *f.Records[3].Key)
	require.EqualValues(t, 4, f.NextOffset)
	require.EqualValues(t, 4, f.EndOffset)

	// Partition 1 holds 3 records, 0 holds 4: follow both from the start,
	// then go away after 5 events.
	s := followCurl(t, topic+"/stream?from=earliest")
	seen := map[int32][]int64{}
	var last event
	for range 5 {
		last = s.next(t)
		seen[last.record.Partition] = append(seen[last.record.Partition], last.record.Offset)
	}
	s.stop()
	bin := base64.StdEncoding.EncodeToString([]byte{0xff, 0, 1})
	for _, ev := range []event{last} {
		if ev.record.Partition == 1 && ev.record.Offset == 0 {
			require.Equal(t, "base64", ev.record.ValueEncoding)
			require.Equal(t, bin, ev.record.Value)
		}
	}

	// More arrive while the client is away.
	var more strings.Builder
	for i := range 6 {
		fmt.Fprintf(&more, `{"value":"later-%d","partition":%d}`+"\n", i, i%2)
	}
	require.NoError(t, os.WriteFile(nd, []byte(more.String()), 0o600))
	runCurl(t, topic+"/messages", "-H", "Content-Type: application/x-ndjson", "--data-binary", "@"+nd)

	// The resumed stream brings exactly the rest: 2 of the first 7 plus
	// the 6 new, each partition in order.
	s = followCurl(t, topic+"/stream?from=earliest", "Last-Event-ID: "+last.id)
	for range 2 + 6 {
		ev := s.next(t)
		seen[ev.record.Partition] = append(seen[ev.record.Partition], ev.record.Offset)
	}
	s.stop()
	require.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6}, seen[0])
	require.Equal(t, []int64{0, 1, 2, 3, 4, 5}, seen[1])
}

// TestCurlStreamFromLatestResumesWhatWasPublishedMeanwhile: a stream
// from "latest" knows its place in every partition from the start, so
// a client that saw one event and went away gets, on resuming, what was
// published to the other partition meanwhile.
func TestCurlStreamFromLatestResumes(t *testing.T) {
	e := startBroker(t, nil)
	base := "http://" + e.HTTPAddr()
	createTopic(t, base, "t", 2)
	runCurl(t, base+"/v1/topics/t/messages?partition=1", "--data-binary", "before")

	s := followCurl(t, base+"/v1/topics/t/stream")
	runCurl(t, base+"/v1/topics/t/messages?partition=0", "--data-binary", "first")
	ev := s.next(t)
	require.EqualValues(t, 0, ev.record.Partition)
	require.Equal(t, "first", ev.record.Value)
	require.Equal(t, "0:1,1:1", ev.id, "partition 1's place is its end when the stream opened")
	s.stop()

	runCurl(t, base+"/v1/topics/t/messages?partition=1", "--data-binary", "meanwhile")
	s = followCurl(t, base+"/v1/topics/t/stream", "Last-Event-ID: "+ev.id)
	ev = s.next(t)
	require.EqualValues(t, 1, ev.record.Partition)
	require.EqualValues(t, 1, ev.record.Offset)
	require.Equal(t, "meanwhile", ev.record.Value)
	require.Equal(t, "0:1,1:2", ev.id)
}
