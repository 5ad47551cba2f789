// Package storage owns the memory that record batches live in, and (as the
// durable log arrives) the per-partition segment log that keeps them.
//
// A batch is copied out of the network read buffer exactly once, into a Buf:
// a pooled, reference-counted buffer. From then on the same bytes are
// stamped with their offsets, kept by the log, and written to every
// subscriber; each holder retains the Buf while it needs the bytes and
// releases it after, and the last release returns the memory to a size-class
// pool. That is what lets the broker fan one batch out to many subscribers
// without copying it per subscriber and without allocating per message.
package storage
