package wsgw_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// The browser helpers are httpapi's dashboard test's (findChromium,
// browser, reapChildren, children), copied: test files do not export.

// findChromium returns the path of a Chromium or Chrome binary. The
// dashboard test needs one and fails without it: `make test` installs
// Debian's chromium package.
func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium binary found: install Debian's chromium package " +
		"(apt-get install chromium, or `make chromium`; `make test` does it)")
	return ""
}

// browser starts headless Chromium for the test. The browser's process is
// killed when the test ends, and the test checks that none of its
// processes is left: the test process becomes their subreaper, so
// Chromium's helpers are its children once the browser exits, and are
// reaped here rather than left as zombies.
func browser(t *testing.T) context.Context {
	path := findChromium(t)
	require.NoError(t, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests may run as root
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1366, 768),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 90*time.Second)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	require.NoError(t, chromedp.Do(bctx), "start chromium at %s", path)
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx)
		cancelBrowser()
		cancelAlloc() // kills the process if still running, and waits for it
		cancelTimeout()
		require.Empty(t, reapChildren(10*time.Second), "chromium processes left after the test")
	})
	return bctx
}

// reapChildren waits up to d for the test process's children (Chromium's
// helpers, adopted as their subreaper) to exit, reaps them, and returns
// those still running, after killing them.
func reapChildren(d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		kids := children()
		for _, pid := range kids {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if kids = children(); len(kids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range kids {
				_ = unix.Kill(pid, unix.SIGKILL)
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, 0, nil)
			}
			return kids
		}
		time.Sleep(50 * time.Millisecond) // poll interval: nothing signals a grandchild's exit
	}
}

// children lists the PIDs whose parent is this process.
func children() []int {
	var pids []int
	self := strconv.Itoa(os.Getpid())
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ")".
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[1] == self {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// browserPage is the test's page: it opens the WebSocket, authenticates
// with the token in its fragment (a browser cannot set headers on a
// WebSocket) with the user and password in its fragment, subscribes, publishes n messages in four publishes, and
// checks its acks and deliveries: every offset in order, with key, value
// and header intact. Its title tells the result.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>running</title>
<script>
const N = 200;
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws", ["ratatoskr.v1"]);
let next = 0, acked = 0, over = false;
function end(title) { if (!over) { over = true; document.title = title; ws.close(1000, "bye"); } }
ws.onopen = () => {
  const [user, password] = decodeURIComponent(location.hash.slice(1)).split(":");
  ws.send(JSON.stringify({op: "auth", id: "a", user, password}));
  ws.send(JSON.stringify({op: "subscribe", id: "s", topic: "browser", partition: 0, from: "earliest"}));
};
ws.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  if (m.type === "error") return end("fail: " + ev.data);
  if (m.type === "ok" && m.id === "s") {
    const records = [];
    for (let i = 0; i < N; i++) records.push({key: "k" + i, value: "msg " + i + " ü", headers: [{key: "n", value: String(i)}]});
    for (let i = 0; i < N; i += N / 4) {
      ws.send(JSON.stringify({op: "publish", id: "p" + i, topic: "browser", partition: 0, records: records.slice(i, i + N / 4)}));
    }
  }
  if (m.type === "ack") {
    for (const a of m.acks) {
      if (a.partition !== 0 || a.offset !== acked) return end("fail: ack " + JSON.stringify(a) + ", want offset " + acked);
      acked++;
    }
  }
  if (m.type === "messages") {
    for (const r of m.records) {
      if (r.offset !== next || r.key !== "k" + next || r.value !== "msg " + next + " ü" || r.headers[0].value !== String(next)) {
        return end("fail: record " + JSON.stringify(r) + ", want offset " + next);
      }
      next++;
    }
  }
  if (next === N && acked === N) end("done " + next);
};
ws.onclose = (ev) => { if (!over) { over = true; document.title = "closed " + ev.code + " " + ev.reason; } };
</script>`

// TestBrowser runs the page in headless Chromium against a broker with
// authentication on: the page authenticates with its first message,
// publishes, and sees its own messages come back in order.
func TestBrowser(t *testing.T) {
	e := startSecure(t)
	ctx := testCtx(t)
	admin, err := e.Gateway().Dedicated(ctx, "test", adminCred)
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	require.NoError(t, admin.CreateTopic(ctx, "browser", client.TopicConfig{Partitions: 1}))
	s := serve(t, e, nil, browserPage)

	bctx := browser(t)
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(s.URL+"/#"+adminCred.User+":"+adminCred.Password),
		chromedp.Poll[chromedp.Void](`!document.title.startsWith("running")`, chromedp.WithPollingTimeout(60*time.Second))))
	title, err := chromedp.Run(bctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "done 200", title)
}
