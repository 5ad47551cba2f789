package engine

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// Readiness: whether the broker should get traffic. It is ready when
// recovery is done and the native listener is up (and has not stopped
// since), the data directory is writable, and it is not draining. The
// HTTP side (httpapi: /readyz, the health report, the admin API's 503s)
// and the ratatoskr_ready metric ask here, so they agree.

// diskProbeTTL is how long a disk probe's answer is reused, so that
// frequent readiness checks cost one small write and fsync every so often.
const diskProbeTTL = 2 * time.Second

// probeFile is the file the disk probe creates and removes in DataDir.
const probeFile = ".ready-probe"

// diskProbe caches whether the data directory is writable.
type diskProbe struct {
	mu  sync.Mutex
	at  time.Time // of the last probe; zero: never
	err error
}

// check returns the cached answer, or probes when it is older than the TTL.
func (d *diskProbe) check(fsys vfs.FS, dir string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at.IsZero() || time.Since(d.at) >= diskProbeTTL {
		d.err = probeDisk(fsys, dir)
		d.at = time.Now()
	}
	return d.err
}

// probeDisk creates, writes, fsyncs and removes a file in dir.
func probeDisk(fsys vfs.FS, dir string) error {
	name := dir + "/" + probeFile
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte("ratatoskr readiness probe\n"))
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close(), fsys.Remove(name))
}

// setNotReady records why the broker is not ready yet; "" makes it ready.
func (e *Engine) setNotReady(reason string) {
	if reason == "" {
		e.notReady.Store(nil)
		return
	}
	e.notReady.Store(&reason)
}

// isReady reports whether Start has finished: recovery done, listener up.
func (e *Engine) isReady() bool { return e.notReady.Load() == nil }

// notReadyReasons lists why the broker should not get traffic; none when
// it is ready. probe also checks that the data directory is writable.
func (e *Engine) notReadyReasons(probe bool) []string {
	if e.srv.Draining() {
		return []string{"shutting down"}
	}
	if r := e.notReady.Load(); r != nil {
		return []string{*r}
	}
	if e.cluster != nil && e.cluster.removed.Load() {
		return []string{"this node was removed from the cluster"}
	}
	if why := e.srv.ListenerProblem(); why != "" {
		return []string{"native listener down: " + why}
	}
	if probe {
		if err := e.disk.check(e.cfg.FS, e.cfg.DataDir); err != nil {
			return []string{"data directory not writable: " + err.Error()}
		}
	}
	return nil
}

func (e *Engine) uptime() time.Duration {
	if e.startedAt.IsZero() {
		return 0
	}
	return time.Since(e.startedAt)
}
