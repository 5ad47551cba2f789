package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"
)

// TestCompletions walks the real command tree as the scripts do.
func TestCompletions(t *testing.T) {
	var c cli
	parser, err := kong.New(&c, kong.Name("ratatoskr"), kong.Vars{"version": "test", "format_help": formatHelp,
		"output_help": outputHelp, "completion_help": completionHelp})
	require.NoError(t, err)
	root := parser.Model.Node
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"to"}, []string{"topic"}},
		{[]string{""}, []string{"serve", "topic", "pub", "sub", "group", "loadtest", "user", "acl", "tenant", "cluster", "dashboard-url", "version", "cert", "key", "completion"}},
		{[]string{"topic", "d"}, []string{"describe", "delete"}},
		{[]string{"group", "reset", "g", "--dr"}, []string{"--dry-run"}},
		{[]string{"topic", "create", "x", "--storage", ""}, []string{"disk", "memory", "redis"}},
		{[]string{"topic", "create", "x", "--storage", "=", "m"}, []string{"memory"}}, // bash splits at =
		{[]string{"topic", "create", "x", "--storage", "="}, []string{"disk", "memory", "redis"}},
		{[]string{"sub", "t", "--output=j"}, []string{"--output=json"}}, // zsh and fish do not
		{[]string{"sub", "t", "-o", ""}, []string{"text", "json"}},
		{[]string{"serve", "--no-p"}, []string{"--no-pin-shards"}},
		{[]string{"serve", "--config", ""}, []string{filesMarker}},
		{[]string{"pub", "t", "--file", "x"}, []string{filesMarker}},
		{[]string{"completion", ""}, nil}, // a positional argument: nothing to offer
		{[]string{"--server", "topic", "x", "topic", "l"}, []string{"list"}},
	} {
		require.Equal(t, tc.want, completions(root, tc.words), "%q", tc.words)
	}
	require.NotContains(t, completions(root, []string{""}), "__complete", "hidden")
	require.Contains(t, completions(root, []string{"sub", "--"}), "--version", "ancestors' flags too")
}

// TestCompletionScripts: each script is printed; the bash one loads in
// bash and completes a subcommand through the binary.
func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI(t, nil, "completion", shell)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "ratatoskr __complete", shell)
	}
	_, _, code := runCLI(t, nil, "completion", "tcsh")
	require.Equal(t, 2, code)

	bash, err := exec.LookPath("bash")
	require.NoError(t, err, "bash is needed to test the bash script")
	script := `source <(ratatoskr completion bash) || exit 3
COMP_WORDS=(ratatoskr topic de); COMP_CWORD=2; _ratatoskr; echo "${COMPREPLY[*]}"
COMP_WORDS=(ratatoskr sub t --output =); COMP_CWORD=4; _ratatoskr; echo "${COMPREPLY[*]}"
complete -p ratatoskr`
	cmd := exec.Command(bash, "--norc", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Equal(t, []string{"describe delete", "text json", "complete -o default -F _ratatoskr ratatoskr"}, lines)
}
