// Package storage owns the memory that record batches live in and the
// per-partition logs that keep them.
//
// A batch is copied out of the network read buffer exactly once, into a Buf:
// a pooled, reference-counted buffer. From then on the same bytes are
// stamped with their offsets, kept by a memory log or staged for a disk
// log, and written to every subscriber; each holder retains the Buf while it
// needs the bytes and releases it after, and the last release returns the
// memory to a size-class pool. That is what lets the broker fan one batch
// out to many subscribers without copying it per subscriber and without
// allocating per message.
//
// A partition's log is a [Log]:
//
//   - [MemLog], for non-durable topics: the batches' Bufs by reference,
//     bounded in bytes.
//   - [DiskLog], for durable topics: a directory of segment files of
//     batches exactly as stamped, each with a sparse index (segment.go
//     draws the layout). The shard stages batches ([Staged]) and its
//     syncer writes them, with direct I/O (direct.go), and fsyncs them;
//     opening a log recovers it, cutting a torn tail and reporting
//     corruption in the middle without removing it (scan.go). Reads from
//     any goroutine go through a shared [BlockCache] of immutable blocks.
//     Opened with a keyring (DiskConfig.Keys), the log encrypts at rest:
//     it writes each batch sealed with AES-256-GCM and opens it on the
//     way back (seal.go; the keys are package crypt's).
//   - [OfflineLog], for a partition whose log could not be opened: it
//     refuses everything with the reason.
//
// Every Log keeps the same contract, written on [Log]: offsets dense from
// the start; readers see what is below the visible end the shard sets; a
// read starts with the batch holding its offset and stops with the batch
// that brings what it passed to maxBytes; a time lookup finds the first
// batch, in offset order, whose max timestamp reaches the time; retention
// removes batches from the start only, exactly in memory and in whole
// segments (never the active one) on disk; a durable log keeps everything
// across a clean restart, at the same offsets, and across a crash
// everything it synced; and damage in the middle of a log is reported,
// skipped by reads and never cut. Package storage/logtest checks it: a
// table of cases and rapid properties against a model, which every
// implementation's tests run unchanged (contract_test.go runs them on
// MemLog and on DiskLog).
//
// Both MemLog and DiskLog are a [Truncater]: their tail can be cut off at
// a batch boundary at or above the visible end. It exists for replicated
// partitions, whose Raft log is the partition's log (one entry per batch):
// a follower, or a deposed leader, must remove its uncommitted entries
// that conflict with a new leader's before it appends those. A disk log
// makes the cut durable before Truncate returns, in an order that leaves a
// prefix of the log at every step, so a crash never brings the removed
// batches back nor leaves a hole; it then appends from the cut as before.
//
// Both are also a [Stager], for a replica that catches up in bulk: a
// follower far behind its Raft leader fetches the leader's committed
// batches into a [Stage], a separate log (for a disk log, a DiskLog in
// the partition's StageDir subdirectory, with the same keys, segment size
// and file cache), while its own log keeps its uncommitted tail. When the
// snapshot is installed, the log is cut back to the stage's start and
// Adopts it: a disk log renames the stage's sealed segment files into its
// directory, so installing a gigabyte costs a few file operations per
// segment rather than a copy. Every step leaves files that reopen as the
// log up to the stage's start followed by the stage's batches, each once
// (OpenStage drops from the stage what a crash left in both places), so
// Adopt after a restart finishes the job (stage.go).
//
// Shared by every log of a broker: a [FileCache] keeps segment files open
// within a budget of descriptors, and a [Reclaimer] deletes removed
// segments in the background, a few megabytes at a time, so a large
// delete does not stall every other fsync. All file access goes through
// the small file-system interface of package vfs, so tests can run on
// memory, crash it, and inject errors.
package storage
