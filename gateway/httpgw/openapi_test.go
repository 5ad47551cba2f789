package httpgw_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/ratatoskr-mq/ratatoskr/gateway/httpgw"
)

// TestOpenAPIDescribesEveryRoute: docs/openapi.yaml's paths and methods
// are exactly the routes the handler serves (and /v1/ws), and each of
// its references names a component it defines.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	raw, err := os.ReadFile("../../docs/openapi.yaml")
	require.NoError(t, err)
	var doc struct {
		OpenAPI    string                          `yaml:"openapi"`
		Paths      map[string]map[string]yaml.Node `yaml:"paths"`
		Components map[string]map[string]yaml.Node `yaml:"components"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."), "an OpenAPI 3 document")

	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	var served []string
	for _, r := range httpgw.Routes() {
		served = append(served, r.Method+" "+r.Path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	require.Equal(t, served, documented)

	var root yaml.Node
	require.NoError(t, yaml.Unmarshal(raw, &root))
	refs := 0
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i++ {
			if n.Kind == yaml.MappingNode && i%2 == 0 && n.Content[i].Value == "$ref" {
				ref := n.Content[i+1].Value
				parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
				require.Len(t, parts, 2, ref)
				_, ok := doc.Components[parts[0]][parts[1]]
				require.True(t, ok, "unresolved %s", ref)
				refs++
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
	require.Positive(t, refs)
}
