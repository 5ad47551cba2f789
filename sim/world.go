package sim

import (
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// World is what the actors share: the seeded random source, the clock,
// and the machine's disk. Everything an actor does that depends on
// chance draws from Rand, and everything that depends on time reads Now,
// so a seed decides a whole run.
type World struct {
	Seed uint64
	Rand *rand.Rand
	// Now is the simulated clock in nanoseconds. The scheduler advances
	// it before each step; an actor may move it forward (AdvanceTo) to
	// fast-forward through timeouts, never back.
	Now  int64
	Step int
	// Mem is the machine's disk. A crash replaces it with what was
	// durable on it (MemFS.CrashWith), and every actor recovers from the
	// new one.
	Mem *vfs.MemFS
	// Log discards everything: the components log their recoveries, and
	// the trace says what happened.
	Log *slog.Logger
	// Caches are the actors' file caches, by actor name: the files open on
	// Mem are theirs (and the two offsets stores' logs), which the logs actor
	// checks.
	Caches map[string]*storage.FileCache

	trace io.Writer // nil unless the run is traced
	hash  hash.Hash64
	line  []byte
}

// Time is Now as a time.Time, for the APIs that take one.
func (w *World) Time() time.Time { return time.Unix(0, w.Now) }

// AdvanceTo moves the clock forward to t (never back).
func (w *World) AdvanceTo(t int64) { w.Now = max(w.Now, t) }

// Tracef records one line of the trace: hashed always (a run's identity
// is the hash of its trace), printed when the run is traced. Every line
// is prefixed with the step and the clock.
func (w *World) Tracef(format string, args ...any) {
	w.line = fmt.Appendf(w.line[:0], "%7d %12d ", w.Step, w.Now)
	w.line = fmt.Appendf(w.line, format, args...)
	w.line = append(w.line, '\n')
	_, _ = w.hash.Write(w.line)
	if w.trace != nil {
		_, _ = w.trace.Write(w.line)
	}
}

// Actor is one component under simulation, with a model of what it must
// do and the invariants it must keep. The scheduler calls its methods
// one at a time, on one goroutine, so an actor must not start goroutines
// whose work it does not wait for: the order of everything must follow
// from the seed.
type Actor interface {
	// Name names the actor in the trace.
	Name() string
	// Step takes one action chosen with w.Rand, at w.Now, traces it, and
	// returns an error if its outcome broke an invariant.
	Step(w *World) error
	// Check verifies the actor's invariants between steps; it runs after
	// every step, so it should be cheap.
	Check(w *World) error
	// Crash is called after the machine crashed: w.Mem holds only what
	// was durable. The actor drops what it held in memory without closing
	// or flushing anything (a crashed process does neither), recovers
	// from w.Mem, and checks what it found against what was acknowledged.
	Crash(w *World) error
}

// NewActor builds an actor on a fresh world.
type NewActor func(w *World) (Actor, error)

// Actors are the components the simulator drives by default.
var Actors = []NewActor{newLogsActor, newAssignActor, newAcksActor, newOffsetsActor, newShardActor, newCoordActor, newClusterActor}

// Config is one run of the simulator.
type Config struct {
	Seed  uint64
	Steps int
	// Trace, if not nil, gets every line of the trace.
	Trace io.Writer
	// Actors default to Actors.
	Actors []NewActor
}

// Result is a finished run: its steps and the hash of its trace, which
// is the same for every run of the same seed and steps.
type Result struct {
	Steps int
	Hash  uint64
}

// Failure is a broken invariant, with what it takes to replay it.
type Failure struct {
	Seed uint64
	Step int
	Err  error
	// Actors names the actors of a run given Config.Actors (nil: all).
	Actors []string
}

func (f *Failure) Error() string {
	replay := fmt.Sprintf("make sim SEED=%d", f.Seed)
	if f.Actors != nil {
		replay += " ACTORS=" + strings.Join(f.Actors, ",")
	}
	return fmt.Sprintf("sim: seed %d failed at step %d: %v\n\treplay it with: %s", f.Seed, f.Step, f.Err, replay)
}

func (f *Failure) Unwrap() error { return f.Err }

// Odds of the scheduler's choices, per million steps.
const (
	crashOdds   = 400    // the machine crashes
	bigTickOdds = 10_000 // the clock jumps up to bigTick instead of tick
	tick        = int64(time.Millisecond)
	bigTick     = int64(200 * time.Millisecond)
)

// Run runs the simulation of cfg.Seed for cfg.Steps steps. Each step the
// scheduler advances the clock, then either crashes the machine (and
// every actor recovers) or lets one actor, chosen at random, take a step;
// then every actor checks its invariants. A broken invariant ends the run
// with a *Failure.
func Run(cfg Config) (Result, error) {
	w := newWorld(cfg.Seed, cfg.Trace)
	// The machine's disk starts as a broker leaves it at start: its data
	// and topics directories durable (engine.New, the topic registry),
	// which the partitions' logs rely on.
	if err := storage.MkdirDurable(w.Mem, "data/topics", 2); err != nil {
		return Result{}, &Failure{Seed: cfg.Seed, Err: err}
	}
	actors, err := newActors(w, cfg.Actors)
	if err != nil {
		return Result{}, &Failure{Seed: cfg.Seed, Err: err}
	}
	for w.Step = 1; w.Step <= cfg.Steps; w.Step++ {
		if err := step(w, actors); err != nil {
			f := &Failure{Seed: cfg.Seed, Step: w.Step, Err: err}
			if cfg.Actors != nil {
				for _, a := range actors {
					f.Actors = append(f.Actors, a.Name())
				}
			}
			return Result{Steps: w.Step, Hash: w.hash.Sum64()}, f
		}
	}
	return Result{Steps: cfg.Steps, Hash: w.hash.Sum64()}, nil
}

// newWorld returns the world a run of seed starts in, tracing to trace
// (nil: hashed only).
func newWorld(seed uint64, trace io.Writer) *World {
	return &World{Seed: seed, Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		Now: 1_000_000_000, Mem: vfs.NewMem(), Log: slog.New(slog.DiscardHandler), Caches: map[string]*storage.FileCache{},
		trace: trace, hash: fnv.New64a()}
}

func newActors(w *World, news []NewActor) ([]Actor, error) {
	if news == nil {
		news = Actors
	}
	actors := make([]Actor, 0, len(news))
	for _, n := range news {
		a, err := n(w)
		if err != nil {
			return nil, err
		}
		actors = append(actors, a)
	}
	return actors, nil
}

// step is one step of the scheduler. A panic (an actor's, or one its
// component raises on a broken invariant, as Raft does) is a failure of
// the step, so that it names the seed.
func step(w *World, actors []Actor) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	if w.Rand.IntN(1_000_000) < bigTickOdds {
		w.Now += w.Rand.Int64N(bigTick)
	} else {
		w.Now += w.Rand.Int64N(tick)
	}
	if w.Rand.IntN(1_000_000) < crashOdds {
		err = crash(w, actors)
	} else {
		a := actors[w.Rand.IntN(len(actors))]
		if err = a.Step(w); err != nil {
			err = fmt.Errorf("%s: %w", a.Name(), err)
		}
	}
	for _, a := range actors {
		if err != nil {
			break
		}
		if err = a.Check(w); err != nil {
			err = fmt.Errorf("%s: check: %w", a.Name(), err)
		}
	}
	return err
}

// crash crashes the machine: the disk keeps what was durable, with torn
// tails half of the time, and every actor recovers.
func crash(w *World, actors []Actor) error {
	torn := w.Rand.IntN(2) == 0
	if torn {
		w.Mem = w.Mem.CrashWith(w.Rand)
	} else {
		w.Mem = w.Mem.Crash()
	}
	w.Tracef("CRASH torn=%v", torn)
	var errs []error
	for _, a := range actors {
		if err := a.Crash(w); err != nil {
			errs = append(errs, fmt.Errorf("%s: recovery: %w", a.Name(), err))
		}
	}
	return errors.Join(errs...)
}
