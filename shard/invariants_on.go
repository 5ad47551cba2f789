//go:build invariants

package shard

// invariants enables assertions of states that must be impossible; `make
// test` builds with the invariants tag, production builds without.
const invariants = true
