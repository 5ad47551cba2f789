// Package browsertest starts headless Chromium for the browser tests (the
// dashboard's, the WebSocket gateway's) and checks that none of its
// processes outlives the test.
package browsertest

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
)

// findChromium returns the path of a Chromium or Chrome binary. The
// browser tests need one and fail without it: `make test` installs
// Debian's chromium package.
func findChromium(t testing.TB) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium binary found: install Debian's chromium package " +
		"(apt-get install chromium, or `make chromium`; `make test` does it)")
	return ""
}

// Start starts headless Chromium for the test. The browser's process is
// killed when the test ends, and the test checks that none of its
// processes is left: the test process becomes their subreaper, so
// Chromium's helpers are its children once the browser exits, and are
// reaped here rather than left as zombies.
func Start(t testing.TB) context.Context {
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
