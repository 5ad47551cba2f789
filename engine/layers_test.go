package engine

import (
	"errors"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The package map of docs/DESIGN.md, checked: which of the module's
// packages (and which outside ones) each package may import. Arrows point
// down only; a package missing here fails the test until it is placed.
var layers = map[string][]string{
	"wire":               {"github.com/klauspost/compress", "github.com/pierrec/lz4"}, // batch codecs
	"ring":               {},
	"storage/vfs":        {"golang.org/x/sys"},
	"storage/crypt":      {},
	"storage/logtest":    {"wire", "storage", "pgregory.net/rapid"},
	"storage/redislog":   {"wire", "storage", "github.com/redis/rueidis"},
	"internal/redistest": {},
	"storage":            {"wire", "storage/vfs", "storage/crypt", "github.com/dgraph-io/ristretto", "github.com/valyala/bytebufferpool"},
	"outbox":             {"wire", "storage"},
	"shard":              {"wire", "outbox", "storage"},
	"shard/driver":       {"wire", "ring", "outbox", "shard", "storage"},
	"group/assign":       {},
	"group/ackstate":     {},
	"group/offsets":      {"wire", "storage", "storage/vfs"},
	"group/coord": {"wire", "storage", "outbox", "shard", "telemetry", "group/assign", "group/ackstate", "group/offsets",
		"group/coord", "telemetry"},
	"telemetry":                {},
	"telemetry/promtext":       {},
	"internal/devcert":         {},
	"internal/browsertest":     {"github.com/chromedp/chromedp", "github.com/stretchr/testify", "golang.org/x/sys"},
	"internal/brokertest":      {"engine", "github.com/stretchr/testify"},
	"cluster/transport":        {"go.etcd.io/raft"},
	"cluster/raftlog":          {"wire", "storage", "go.etcd.io/raft"},
	"cluster/meta":             {"wire"},
	"cluster":                  {"wire", "cluster/raftlog", "cluster/transport", "go.etcd.io/raft"},
	"cluster/internal/testlog": {"wire", "storage"},
	"internal/jepsen":          {"*"},
	"internal/jepsen/checker":  {},
	"auth":                     {"storage", "storage/vfs", "github.com/xdg-go/scram", "github.com/golang-jwt/jwt"},
	"httpapi":                  {"wire", "storage", "storage/vfs", "telemetry", "auth", "golang.org/x/sys"},
	"topic":                    {"wire", "shard", "storage"},
	"server": {"wire", "outbox", "shard", "storage", "telemetry", "telemetry/promtext", "topic", "group/coord", "auth",
		"github.com/panjf2000/gnet", "golang.org/x/sys"},
	"sim": {"wire", "storage", "storage/vfs", "outbox", "shard", "group/assign", "group/ackstate", "group/offsets",
		"group/coord", "telemetry", "cluster", "cluster/raftlog", "go.etcd.io/raft"},
	"client": {"wire", "github.com/valyala/bytebufferpool", "github.com/xdg-go/scram"},
	"loadtest": {"client", "wire", "github.com/HdrHistogram/hdrhistogram-go", "golang.org/x/sys",
		"github.com/valyala/fastjson", "gateway/wsgw/wsproto", "github.com/coder/websocket",
		"proto/ratatoskr/v1", "google.golang.org/grpc"},
	"proto/ratatoskr/v1": {"google.golang.org/grpc", "google.golang.org/protobuf"},
	"gateway/grpcgw": {"client", "gateway", "proto/ratatoskr/v1", "wire", "golang.org/x/sync",
		"google.golang.org/grpc"},
	"gateway/wsgw": {"client", "gateway", "gateway/wsgw/wsproto", "wire", "telemetry/promtext",
		"github.com/coder/websocket", "github.com/valyala/bytebufferpool", "golang.org/x/sync"},
	"gateway/wsgw/wsproto": {"client", "wire"},
	"gateway":              {"client", "server", "wire", "telemetry/promtext", "github.com/VictoriaMetrics/metrics"},
	"gateway/httpgw":       {"client", "gateway", "wire", "github.com/valyala/fastjson"},
	"engine":               {"*"},
	"cmd/ratatoskr":        {"*"},
	"bench":                {"*"},
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

// TestShardIsPure: the shard is a state machine (docs/DESIGN.md). Its
// package imports neither os, net, runtime nor x/sys, starts no
// goroutine, and of package time uses only the Duration and Time types and
// the unit constants: the driver hands it the clock (Tick).
func TestShardIsPure(t *testing.T) {
	fset := token.NewFileSet()
	pkg, err := build.Default.ImportDir("../shard", 0)
	require.NoError(t, err)
	require.NotEmpty(t, pkg.GoFiles)
	timeOK := map[string]bool{"Duration": true, "Time": true, "Nanosecond": true, "Microsecond": true,
		"Millisecond": true, "Second": true, "Minute": true, "Hour": true}
	for _, name := range pkg.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join("../shard", name), nil, 0)
		require.NoError(t, err)
		{
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				require.False(t, path == "os" || strings.HasPrefix(path, "os/") || path == "net" ||
					strings.HasPrefix(path, "net/") || path == "runtime" || strings.HasPrefix(path, "golang.org/x/sys"),
					"%s imports %s", name, path)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.GoStmt:
					t.Errorf("%s: the shard starts a goroutine at %s", name, fset.Position(n.Pos()))
				case *ast.SelectorExpr:
					if id, ok := n.X.(*ast.Ident); ok && id.Name == "time" && !timeOK[n.Sel.Name] {
						t.Errorf("%s: the shard uses time.%s at %s", name, n.Sel.Name, fset.Position(n.Pos()))
					}
				}
				return true
			})
		}
	}
}
