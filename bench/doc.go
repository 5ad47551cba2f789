// Package bench holds the benchmarks of Ratatoskr's hot paths that span
// packages: a shard appending and acking batches, fan-out to many
// subscribers, and an in-process publish→deliver run through the real
// engine and client. Per-package micro-benchmarks (frame decode, batch
// check, ring push/pop) live beside their code. `make bench` runs them all
// and then a load-test matrix against a broker process.
package bench
