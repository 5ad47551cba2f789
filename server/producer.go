package server

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// initProducer answers InitProducer with a new producer id: a random
// 63-bit number. Random ids need no state: nothing to persist, so nothing
// a crash can roll back into handing out an id twice, and no coordination
// once several brokers hand them out. Two producers that a partition
// remembers at once (at most shard.DefaultMaxProducers) share an id with
// probability about n²/2⁶⁴: never, in practice.
func (s *session) initProducer(f wire.Frame) error {
	if len(f.Body) != 0 {
		return s.malformed(f.Corr, wire.Errorf(wire.CodeMalformed, "InitProducer has no body"))
	}
	var b [wire.ProducerIDSize]byte
	s.out.SendCopy(wire.AppendProducerID(b[:0], f.Corr, newProducerID()))
	return nil
}

// newProducerID returns a random id in [0, 2⁶³).
func newProducerID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}
