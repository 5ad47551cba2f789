//go:build invariants

package meta

// invariants makes Apply check the whole state after every entry and
// panic, naming the broken rule, if it is invalid; `make test` builds
// with the invariants tag, production builds without.
const invariants = true
