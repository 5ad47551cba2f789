package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/group/assign"
)

// The assign actor is a consumer group's membership as the coordinator
// (group/coord/coord.go) runs it, around group/assign.Sticky: members join,
// leave, heartbeat and time out on the simulated clock; every change is
// a generation. A partition moves from a live member in two steps: the
// old owner holds it (its feed runs, it may commit) until it confirms the
// new generation with a heartbeat or times out, and only then does the
// new owner start.
const (
	assignParts    = 12
	assignMembers  = 7 // at most
	sessionTimeout = int64(100 * time.Millisecond)
)

type assignActor struct {
	members   []string         // live members, sorted
	deadline  map[string]int64 // when each member's session ends
	confirmed map[string]int   // the last generation each member confirmed
	gen       int
	owner     []string // this generation's assignment
	holder    []string // who holds each partition now: owner, or an owner giving it up
	nextID    int
}

func newAssignActor(*World) (Actor, error) {
	return &assignActor{deadline: map[string]int64{}, confirmed: map[string]int{},
		owner: make([]string, assignParts), holder: make([]string, assignParts)}, nil
}

func (a *assignActor) Name() string { return "assign" }

func (a *assignActor) Step(w *World) error {
	a.expire(w)
	switch r := w.Rand.IntN(100); {
	case r < 20 && len(a.members) < assignMembers:
		a.join(w)
	case r < 30 && len(a.members) > 0:
		a.leave(w, a.members[w.Rand.IntN(len(a.members))], "leave")
	case len(a.members) > 0:
		a.heartbeat(w, a.members[w.Rand.IntN(len(a.members))])
	default:
		w.Tracef("assign idle")
	}
	return nil
}

func (a *assignActor) join(w *World) {
	id := fmt.Sprintf("m%04d", a.nextID)
	a.nextID++
	a.members = append(a.members, id)
	slices.Sort(a.members)
	a.deadline[id] = w.Now + sessionTimeout
	w.Tracef("assign join %s", id)
	a.rebalance(w)
}

// leave removes a member: it gives up its partitions at once.
func (a *assignActor) leave(w *World, id, why string) {
	a.members = slices.DeleteFunc(a.members, func(m string) bool { return m == id })
	delete(a.deadline, id)
	delete(a.confirmed, id)
	for p, h := range a.holder {
		if h == id {
			a.holder[p] = ""
		}
	}
	w.Tracef("assign %s %s", why, id)
	a.rebalance(w)
}

// expire removes the members whose session timed out.
func (a *assignActor) expire(w *World) {
	for _, id := range slices.Clone(a.members) {
		if a.deadline[id] <= w.Now {
			a.leave(w, id, "timeout")
		}
	}
}

// heartbeat extends a member's session and confirms the generation,
// releasing the partitions it was giving up.
func (a *assignActor) heartbeat(w *World, id string) {
	a.deadline[id] = w.Now + sessionTimeout
	a.confirmed[id] = a.gen
	for p, h := range a.holder {
		if h == id && a.owner[p] != id {
			a.holder[p] = ""
		}
	}
	a.handOver()
	w.Tracef("assign heartbeat %s gen=%d holders=%v", id, a.gen, a.holder)
}

// rebalance starts a generation with the assignor's answer.
func (a *assignActor) rebalance(w *World) {
	a.gen++
	if len(a.members) == 0 {
		clear(a.owner)
		w.Tracef("assign gen=%d no members", a.gen)
		return
	}
	prev := slices.Clone(a.owner)
	a.owner = assign.Sticky(assignParts, a.members, prev)
	moved := 0
	for p := range prev {
		if prev[p] != "" && prev[p] != a.owner[p] {
			moved++
		}
	}
	a.handOver()
	w.Tracef("assign gen=%d members=%v owners=%v moved=%d", a.gen, a.members, a.owner, moved)
}

// handOver gives each partition nobody holds to its owner.
func (a *assignActor) handOver() {
	for p, h := range a.holder {
		if h == "" {
			a.holder[p] = a.owner[p]
		}
	}
}

// Check: every partition has an owner among the live members while
// there are any, the assignment is balanced, and no partition is held by
// a member other than its owner once that member confirmed the
// generation: two members never feed one partition in a generation.
func (a *assignActor) Check(*World) error {
	if len(a.members) == 0 {
		return a.checkEmpty()
	}
	count := map[string]int{}
	for p, o := range a.owner {
		if _, live := slices.BinarySearch(a.members, o); !live {
			return fmt.Errorf("gen %d: partition %d is owned by %q, not a live member of %v", a.gen, p, o, a.members)
		}
		count[o]++
		if err := a.checkHolder(p); err != nil {
			return err
		}
	}
	lo, hi := assignParts/len(a.members), (assignParts+len(a.members)-1)/len(a.members)
	for _, m := range a.members {
		if c := count[m]; c < lo || c > hi {
			return fmt.Errorf("gen %d: %s owns %d partitions, not %d..%d: unbalanced", a.gen, m, c, lo, hi)
		}
	}
	return nil
}

func (a *assignActor) checkHolder(p int) error {
	h := a.holder[p]
	switch {
	case h == a.owner[p]:
		return nil
	case h == "":
		return fmt.Errorf("gen %d: partition %d is held by nobody, though its owner %s is free to take it", a.gen, p, a.owner[p])
	case a.confirmed[h] == a.gen:
		return fmt.Errorf("gen %d: %s still holds partition %d after confirming the generation that gave it to %s", a.gen, h, p, a.owner[p])
	}
	if _, live := slices.BinarySearch(a.members, h); !live {
		return fmt.Errorf("gen %d: partition %d is held by %s, which is gone", a.gen, p, h)
	}
	return nil
}

func (a *assignActor) checkEmpty() error {
	for p := range a.owner {
		if a.owner[p] != "" || a.holder[p] != "" {
			return fmt.Errorf("gen %d: partition %d owned by %q, held by %q, with no members", a.gen, p, a.owner[p], a.holder[p])
		}
	}
	return nil
}

// Crash: the membership lives in memory only; the members reconnect and
// join a new group, which this actor models as all of them leaving.
func (a *assignActor) Crash(w *World) error {
	for _, id := range slices.Clone(a.members) {
		a.leave(w, id, "crash")
	}
	return nil
}
