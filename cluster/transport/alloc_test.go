package transport

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSendPathAllocs: once its buffers have grown, a peer's send path
// (Send's sizing and queueing, the writer's take, encoding and give-back)
// allocates nothing per message; protobuf marshals into the frame buffer.
func TestSendPathAllocs(t *testing.T) {
	tr := &TCP{cfg: testConfig(1, func(uint64, []Envelope) {}), ctx: context.Background()}
	require.NoError(t, tr.cfg.Validate())
	p := newPeer(tr, 2, "unused")
	defer p.stop()
	envs := testEnvs(32)
	round := func() {
		p.enqueue(envs)
		q := p.take()
		p.fb.reset(tr.cfg.MaxFrameBytes)
		for _, m := range q {
			if err := p.fb.add(m.group, m.msg, m.size); err != nil {
				t.Fatal(err)
			}
		}
		p.fb.finish()
		p.giveBack(q)
	}
	round()
	require.Zero(t, testing.AllocsPerRun(100, round))
}

func BenchmarkEncodeFrame(b *testing.B) {
	envs := testEnvs(64)
	sizes := make([]int, len(envs))
	for i, e := range envs {
		sizes[i] = e.Msg.Size()
	}
	var f frameBuf
	b.ReportAllocs()
	for b.Loop() {
		f.reset(DefaultMaxFrameBytes)
		for i, e := range envs {
			if err := f.add(e.Group, &e.Msg, sizes[i]); err != nil {
				b.Fatal(err)
			}
		}
		f.finish()
	}
	b.SetBytes(int64(len(f.b)))
}

func BenchmarkDecodeFrame(b *testing.B) {
	frame, _ := encodeFrames(b, testEnvs(64), DefaultMaxFrameBytes)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if _, _, err := decodeFrame(frame, DefaultMaxFrameBytes); err != nil {
			b.Fatal(err)
		}
	}
}
