package main

// Shell completion. `ratatoskr completion bash|zsh|fish` prints a small
// script that, on each Tab, runs the hidden `ratatoskr __complete WORDS...`,
// which walks kong's model of the command line (commands, flags, enum
// values) and prints the candidates, one per line. So completion always
// matches the binary it runs, and the logic is Go, tested as Go.
//
// No library: jotaen/kong-completion (v0.0.4, 2022) and willabides/kongplete
// (v0.4.0, 2023) are built against kong 0.6 and 0.8 and bring
// posener/complete v1 and three more modules; the model walk is short.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

// completionHelp is the command's help: how to load each script.
const completionHelp = `Print a shell completion script. Load it with:
  bash: source <(ratatoskr completion bash)       (in ~/.bashrc)
  zsh:  source <(ratatoskr completion zsh)        (in ~/.zshrc, after compinit)
  fish: ratatoskr completion fish | source        (in ~/.config/fish/config.fish)`

func (c *completionCmd) Run() error {
	_, err := fmt.Print(completionScripts[c.Shell])
	return err
}

// filesMarker asks the shell script to complete file names.
const filesMarker = "__files__"

var completionScripts = map[string]string{
	"bash": `# bash completion for ratatoskr
_ratatoskr() {
    local IFS=$'\n'
    local -a out
    out=($(ratatoskr __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    if [[ "${out[0]}" == "` + filesMarker + `" ]]; then
        local cur="${COMP_WORDS[COMP_CWORD]}"
        [[ "$cur" == "=" ]] && cur=""
        COMPREPLY=($(compgen -f -- "$cur"))
    else
        COMPREPLY=("${out[@]}")
    fi
}
complete -o default -F _ratatoskr ratatoskr
`,
	"zsh": `#compdef ratatoskr
# zsh completion for ratatoskr
_ratatoskr() {
    local -a out
    out=("${(@f)$(ratatoskr __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ "${out[1]}" == "` + filesMarker + `" ]]; then
        _files
    elif (( ${#out} )) && [[ -n "${out[1]}" ]]; then
        compadd -- "${out[@]}"
    fi
}
if [[ "$funcstack[1]" == "_ratatoskr" ]]; then
    _ratatoskr "$@"
else
    compdef _ratatoskr ratatoskr
fi
`,
	"fish": `# fish completion for ratatoskr
function __ratatoskr_complete
    set -l words (commandline -opc) (commandline -ct)
    set -l out (ratatoskr __complete $words[2..-1] 2>/dev/null)
    if test "$out[1]" = "` + filesMarker + `"
        __fish_complete_path (commandline -ct)
    else
        printf '%s\n' $out
    end
end
complete -c ratatoskr -f -a '(__ratatoskr_complete)'
`,
}

// completeCmd is what the scripts run: the words typed after
// "ratatoskr", the last one being completed (empty at a new word).
type completeCmd struct {
	Words []string `arg:"" optional:""`
}

func (c *completeCmd) Run(k *kong.Context) error {
	for _, s := range completions(k.Model.Node, c.Words) {
		if _, err := fmt.Println(s); err != nil {
			return err
		}
	}
	return nil
}

// completions are the candidates for the last of words. bash splits
// "--flag=value" into "--flag", "=", "value"; zsh and fish keep it whole.
func completions(root *kong.Node, words []string) []string {
	cur := ""
	if len(words) > 0 {
		cur, words = words[len(words)-1], words[:len(words)-1]
	}
	node := root
	var last, pending *kong.Flag // the last flag; the one whose value comes next
	for _, w := range words {
		switch {
		case w == "=":
			pending = last
		case pending != nil:
			pending = nil
		case strings.HasPrefix(w, "--"):
			name, _, hasValue := strings.Cut(w[2:], "=")
			last = findFlag(node, func(f *kong.Flag) bool { return f.Name == name || slices.Contains(f.Aliases, name) })
			if last != nil && !last.IsBool() && !last.IsCounter() && !hasValue {
				pending = last
			}
		case len(w) == 2 && w[0] == '-':
			last = findFlag(node, func(f *kong.Flag) bool { return f.Short == rune(w[1]) })
			if last != nil && !last.IsBool() && !last.IsCounter() {
				pending = last
			}
		default:
			if child := findCommand(node, w); child != nil {
				node = child
			}
		}
	}
	if cur == "=" {
		return flagValues(last, "", "")
	}
	if pending != nil {
		return flagValues(pending, "", cur)
	}
	if name, value, ok := strings.Cut(cur, "="); ok && strings.HasPrefix(name, "--") {
		f := findFlag(node, func(f *kong.Flag) bool { return f.Name == name[2:] })
		return flagValues(f, name+"=", value)
	}
	if strings.HasPrefix(cur, "-") {
		return flagNames(node, cur)
	}
	return commandNames(node, cur)
}

func findFlag(node *kong.Node, match func(*kong.Flag) bool) *kong.Flag {
	for _, group := range node.AllFlags(false) {
		for _, f := range group {
			if match(f) {
				return f
			}
		}
	}
	return nil
}

func findCommand(node *kong.Node, name string) *kong.Node {
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && (c.Name == name || slices.Contains(c.Aliases, name)) {
			return c
		}
	}
	return nil
}

// flagValues are the values of f that start with prefix, each after
// before: its enum, or the file marker for a path.
func flagValues(f *kong.Flag, before, prefix string) []string {
	if f == nil {
		return nil
	}
	if f.PlaceHolder == "PATH" || f.Tag.Type == "path" || f.Tag.Type == "existingfile" {
		return []string{filesMarker}
	}
	var out []string
	for _, v := range f.EnumSlice() {
		if v != "" && strings.HasPrefix(v, prefix) {
			out = append(out, before+v)
		}
	}
	return out
}

// flagNames are the flags of node and its ancestors that start with
// prefix, negations included.
func flagNames(node *kong.Node, prefix string) []string {
	var out []string
	add := func(name string) {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	for _, group := range node.AllFlags(true) {
		for _, f := range group {
			add("--" + f.Name)
			switch f.Tag.Negatable {
			case "":
			case "_": // kong's mark for the default negation
				add("--no-" + f.Name)
			default:
				add("--" + f.Tag.Negatable)
			}
		}
	}
	slices.Sort(out)
	return out
}

// commandNames are node's visible subcommands that start with prefix.
func commandNames(node *kong.Node, prefix string) []string {
	var out []string
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && !c.Hidden && strings.HasPrefix(c.Name, prefix) {
			out = append(out, c.Name)
		}
	}
	return out
}
