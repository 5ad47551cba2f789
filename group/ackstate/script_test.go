package ackstate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// TestScripts drives State through the scripts in testdata/, etcd raft's
// datadriven way: each command is a step with its logical time, each
// answer the state it leaves; `go test ./group/ackstate -rewrite` writes
// the answers afresh after a deliberate change. After every step the
// window's invariants are checked.
//
//	new start=N
//	deliver from=A to=B deadline=T     first delivery of [A, B)
//	redeliver offsets=(1,2) attempt=N deadline=T
//	ack from=A to=B                    prints how many became acked
//	nack o=O now=T [delay=D] [reason=R] [backoff=(10,20)]
//	expire now=T [backoff=(10,20)]
//	due now=T max=N                    prints dead offsets and redeliveries by count
//	takeover now=T
//	skip to=O                          prints how many unacked were dropped
//	state                              floor, next, unacked, next wake
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var a *State
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "new" && a == nil {
				d.Fatalf(t, "%s before new", d.Cmd)
			}
			var out string
			switch d.Cmd {
			case "new":
				a = New(arg(t, d, "start"))
			case "deliver":
				a.Delivered(arg(t, d, "from"), arg(t, d, "to"), arg(t, d, "deadline"))
			case "redeliver":
				a.Redelivered(list(t, d, "offsets"), uint32(arg(t, d, "attempt")), arg(t, d, "deadline"))
			case "ack":
				out = strconv.Itoa(a.Ack(arg(t, d, "from"), arg(t, d, "to"))) + " acked\n"
			case "nack":
				reason := ""
				if d.HasArg("reason") {
					d.ScanArgs(t, "reason", &reason)
				}
				out = strconv.FormatBool(a.Nack(arg(t, d, "o"), optArg(t, d, "delay"), reason, arg(t, d, "now"),
					list(t, d, "backoff"))) + "\n"
			case "expire":
				a.Expire(arg(t, d, "now"), list(t, d, "backoff"))
			case "due":
				redo := map[uint32][]int64{}
				dead := a.Due(arg(t, d, "now"), uint32(arg(t, d, "max")), nil, redo)
				out = "dead " + fmt.Sprint(dead) + "\n"
				counts := make([]uint32, 0, len(redo))
				for c := range redo {
					counts = append(counts, c)
				}
				slices.Sort(counts)
				for _, c := range counts {
					out += fmt.Sprintf("delivery %d: %v\n", c, redo[c])
				}
			case "takeover":
				a.Takeover(arg(t, d, "now"))
			case "skip":
				out = strconv.Itoa(a.SkipTo(arg(t, d, "to"))) + " dropped\n"
			case "state":
			default:
				d.Fatalf(t, "unknown command %q", d.Cmd)
			}
			checkWindow(t, d, a)
			return out + describe(a)
		})
	})
}

func arg(t *testing.T, d *datadriven.TestData, key string) int64 {
	var v int64
	d.ScanArgs(t, key, &v)
	return v
}

func optArg(t *testing.T, d *datadriven.TestData, key string) int64 {
	if !d.HasArg(key) {
		return 0
	}
	return arg(t, d, key)
}

func list(t *testing.T, d *datadriven.TestData, key string) []int64 {
	if !d.HasArg(key) {
		return nil
	}
	var vs []int64
	for _, s := range d.CmdArgs[slices.IndexFunc(d.CmdArgs, func(a datadriven.CmdArg) bool { return a.Key == key })].Vals {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			d.Fatalf(t, "%s: %v", key, err)
		}
		vs = append(vs, v)
	}
	return vs
}

// describe is the state a step leaves, as the scripts print it.
func describe(a *State) string {
	var acked []string
	for o := a.Floor(); o < a.Next(); o++ {
		if a.Acked(o) {
			acked = append(acked, strconv.FormatInt(o, 10))
		}
	}
	return fmt.Sprintf("floor %d next %d unacked %d acked-in-window [%s] wake %d\n",
		a.Floor(), a.Next(), a.Unacked(), strings.Join(acked, " "), a.NextWake())
}

// checkWindow: floor <= next, the floor is never an acked offset (it
// would have advanced), and unacked counts the window's unacked offsets.
func checkWindow(t *testing.T, d *datadriven.TestData, a *State) {
	if a.Floor() > a.Next() {
		d.Fatalf(t, "floor %d past next %d", a.Floor(), a.Next())
	}
	n := 0
	for o := a.Floor(); o < a.Next(); o++ {
		if !a.Acked(o) {
			n++
		}
	}
	if n != a.Unacked() {
		d.Fatalf(t, "unacked %d, but %d offsets of the window are not acked", a.Unacked(), n)
	}
	if a.Floor() < a.Next() && a.Acked(a.Floor()) {
		d.Fatalf(t, "the floor %d is acked but did not advance", a.Floor())
	}
}
