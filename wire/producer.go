package wire

// Idempotent publishing. A producer asks the broker for an id with
// InitProducer (an empty body) and gets it in a ProducerID frame:
//
//	ProducerID:
//	+------------------+
//	| producer_id i64  |
//	+------------------+
//
// It then writes the id into every batch header it publishes, with the
// sequence number of the batch's first record, counted per partition
// (batch header bytes 40-51, see batch.go). NoProducer in the id field
// means a batch that is not idempotent.

// NoProducer is the producer id (and sequence) of a batch published
// without idempotence.
const NoProducer = -1

// ProducerIDSize is the size of a whole ProducerID frame.
const ProducerIDSize = HeaderSize + 8

// AppendProducerID appends a complete ProducerID frame.
func AppendProducerID(dst []byte, corr uint32, id int64) []byte {
	dst = AppendHeader(dst, TypeProducerID, 0, corr, ProducerIDSize-HeaderSize)
	return appendI64(dst, id)
}

// DecodeProducerID decodes a ProducerID body.
func DecodeProducerID(body []byte) (int64, error) {
	d := NewDecoder(body)
	id := d.I64()
	return id, d.Done()
}

// NextSeq is the sequence that follows a batch of count records starting
// at seq. Sequences run from 0 to MaxInt32 and wrap to 0, as Kafka's do,
// so a producer never runs out of them.
func NextSeq(seq int32, count int) int32 {
	return int32((int64(seq) + int64(count)) % (1 << 31))
}

// SeqDistance is how far sequence b is ahead of a (negative: behind), in
// the wrapping sequence space: the shorter way round.
func SeqDistance(a, b int32) int64 {
	d := (int64(b) - int64(a)) % (1 << 31)
	switch {
	case d >= 1<<30:
		d -= 1 << 31
	case d < -(1 << 30):
		d += 1 << 31
	}
	return d
}
