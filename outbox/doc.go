// Package outbox holds what the broker sends a connection, between the
// shards that produce it and the network layer that writes it: a
// connection's Outbox (its bounded queue of frames, with the flow-control
// state the shards judge: pressure, stalls, detachments), the Pending
// batch its writer takes, the Budget that bounds all outboxes together,
// and the Inflight count of inbound bytes the broker holds.
//
// It sits below both of its users: shards queue deliveries into outboxes
// (package shard) and their drivers encode acks into them (shard/driver);
// the network side drains them (server). It imports neither: the shards
// are driven by the network side, so an Outbox there would be a cycle.
// Its clock (Clock) is the one shard drivers hand their shards, since the
// shards compare their time with the stall times outboxes record.
package outbox
