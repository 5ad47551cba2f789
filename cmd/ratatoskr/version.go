package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// versionCmd prints what the binary is: its module version, the commit it
// was built from (and whether the tree had changes), when, with which Go,
// and the protocol versions it speaks.
type versionCmd struct{}

func (versionCmd) Run() error {
	_, err := fmt.Println(versionString())
	return err
}

// buildVersion is what `make build` stamps in (-ldflags -X
// main.buildVersion=...: git describe of the tree). Without it the
// version and commit come from what the Go toolchain recorded, if it did.
var buildVersion string

// versionString is the one line `ratatoskr version` and `--version` print.
func versionString() string {
	version, commit, when, modified := "(devel)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if buildVersion != "" {
		version, commit = buildVersion, ""
	}
	out := "ratatoskr " + version
	if commit != "" {
		if len(commit) > 12 {
			commit = commit[:12]
		}
		out += ", commit " + commit
		if modified {
			out += " (modified)"
		}
	}
	if when != "" {
		out += ", " + when
	}
	return out + ", " + runtime.Version() + ", protocol " + strconv.Itoa(int(wire.MinVersion)) + "-" +
		strconv.Itoa(int(wire.Version))
}
