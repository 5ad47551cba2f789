package engine

import (
	"errors"
	"go/build"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The package map of docs/DESIGN.md, checked: which of the module's
// packages (and which outside ones) each package may import. Arrows point
// down only; a package missing here fails the test until it is placed.
var layers = map[string][]string{
	"wire":           {},
	"ring":           {},
	"storage/vfs":    {"golang.org/x/sys"},
	"storage":        {"wire", "storage/vfs", "github.com/dgraph-io/ristretto", "github.com/valyala/bytebufferpool"},
	"shard":          {"wire", "ring", "storage"},
	"group/assign":   {},
	"group/ackstate": {},
	"group/offsets":  {"wire", "storage", "storage/vfs"},
	"telemetry":      {},
	"sim":            {"wire", "storage", "storage/vfs", "group/assign", "group/ackstate", "group/offsets"},
	"client":         {"wire", "github.com/valyala/bytebufferpool"},
	"loadtest":       {"client", "wire", "github.com/HdrHistogram/hdrhistogram-go", "golang.org/x/sys"},
	"engine":         {"*"},
	"cmd/ratatoskr":  {"*"},
	"bench":          {"*"},
}

const module = "github.com/ratatoskr-mq/ratatoskr/"

func TestPackageLayers(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "data") {
			return filepath.SkipDir
		}
		pkg, ierr := build.Default.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(ierr, &noGo) {
			return nil // a directory of data or of tests only
		}
		require.NoError(t, ierr, path)
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		allowed, ok := allowedFor(rel)
		require.True(t, ok, "package %s is not in the package map (docs/DESIGN.md and layers here)", rel)
		checked++
		for _, imp := range pkg.Imports {
			require.True(t, importAllowed(imp, allowed), "%s imports %s, which the package map does not allow", rel, imp)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 10)
}

// allowedFor finds a package's rule: its own, or its nearest listed
// parent's for the bench tools and cmd.
func allowedFor(rel string) ([]string, bool) {
	for p := rel; ; p = filepath.ToSlash(filepath.Dir(p)) {
		if a, ok := layers[p]; ok {
			return a, true
		}
		if p == "." || !strings.Contains(p, "/") {
			a, ok := layers[p]
			return a, ok
		}
	}
}

// importAllowed: the standard library always; "*" allows anything; an
// entry allows a module package (and, for an outside module, any package
// under it).
func importAllowed(imp string, allowed []string) bool {
	first := imp
	if i := strings.IndexByte(imp, '/'); i >= 0 {
		first = imp[:i]
	}
	if !strings.Contains(first, ".") {
		return true // the standard library
	}
	for _, a := range allowed {
		switch {
		case a == "*":
			return true
		case strings.HasPrefix(imp, module):
			if strings.TrimPrefix(imp, module) == a {
				return true
			}
		case imp == a || strings.HasPrefix(imp, a+"/"):
			return true
		}
	}
	return false
}
