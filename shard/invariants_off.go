//go:build !invariants

package shard

const invariants = false
