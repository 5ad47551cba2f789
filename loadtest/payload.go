package loadtest

import (
	"fmt"
	"math/rand/v2"
)

// Payload fillers: what follows the header. Letters repeat with a period
// of 26 bytes and are the same in every message, which costs nothing to
// make and compresses far better than real data; JSON is log lines as a
// service writes them (repeated keys, varied values), different from one
// message to the next, for measuring compression (--compression).
const (
	PayloadLetters = "letters"
	PayloadJSON    = "json"
)

// payloadRing is how many distinct payloads an unpaced producer cycles
// through: more than a batch holds (256 KiB of 64-byte or larger
// messages), so that no line repeats within a batch, as in a real
// producer's, and a codec's ratio is not inflated by exact repeats (a
// ring of 256 made zstd's ratio 14 instead of 4.5). A paced producer has
// its 256 burst buffers, which its batches, far smaller, do not exhaust.
const payloadRing = 4096

// fillPayload writes filler kind into p after the header; i picks the
// variant, so payloads made with different i differ.
func fillPayload(p []byte, kind string, i int) {
	if kind != PayloadJSON {
		for j := MinSize; j < len(p); j++ {
			p[j] = byte('a' + j%26)
		}
		return
	}
	r := rand.New(rand.NewPCG(uint64(i), 13))
	levels := []string{"debug", "info", "info", "info", "warn", "error"}
	services := []string{"checkout", "payments", "catalog", "search", "auth"}
	paths := []string{"/api/v1/orders", "/api/v1/cart", "/api/v1/items", "/healthz", "/api/v2/search"}
	msgs := []string{"request served", "order created", "cache miss", "retrying upstream call", "user signed in"}
	var line []byte
	for len(line) < len(p)-MinSize {
		line = fmt.Appendf(line, `{"ts":"2026-11-25T10:%02d:%02d.%06dZ","level":%q,"service":%q,"host":"web-%02d",`+
			`"user_id":%d,"order_id":"o-%06x","path":"%s/%d","status":%d,"latency_ms":%.1f,"msg":%q}`+"\n",
			r.IntN(60), r.IntN(60), r.IntN(1e6), levels[r.IntN(len(levels))], services[r.IntN(len(services))],
			r.IntN(32), r.IntN(100000), r.IntN(1<<24), paths[r.IntN(len(paths))], r.IntN(10000),
			[]int{200, 200, 200, 201, 404, 500}[r.IntN(6)], r.Float64()*250, msgs[r.IntN(len(msgs))])
	}
	copy(p[MinSize:], line)
}
