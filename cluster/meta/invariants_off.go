//go:build !invariants

package meta

const invariants = false
