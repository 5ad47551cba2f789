package wsgw_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw/wsproto"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestJSONProtocol drives every JSON op: topic admin, subscribe from the
// start of a partition, publish with keys, headers, binary values and a
// per-record partition, acks with their offsets, and deliveries with
// everything intact, in messages frames of many records.
func TestJSONProtocol(t *testing.T) {
	e := startBroker(t, nil)
	s := serve(t, e, nil, "")
	ws := dial(t, s, nil)

	r := callJSON(t, ws, obj{"op": "create_topic", "id": "c1", "topic": "t", "config": obj{"partitions": 2, "storage": "disk"}})
	require.Equal(t, "ok", r["type"], "%v", r)
	r = callJSON(t, ws, obj{"op": "describe_topic", "id": 2, "topic": "t"})
	require.Equal(t, "topic", r["type"], "%v", r)
	topic := r["topic"].(obj)
	require.Equal(t, "t", topic["name"])
	require.Len(t, topic["partitions"], 2)
	require.Equal(t, "disk", topic["config"].(obj)["storage"])

	r = callJSON(t, ws, obj{"op": "subscribe", "id": 3, "topic": "t", "partition": 1, "from": "earliest"})
	require.Equal(t, "ok", r["type"], "%v", r)

	bin := []byte{0xff, 0x00, 0xfe}
	sendJSON(t, ws, obj{"op": "publish", "id": 4, "topic": "t", "partition": 1, "records": []obj{
		{"key": "k1", "value": "hello \"world\"\n", "headers": []obj{{"key": "h", "value": "v"}}},
		{"value": base64.StdEncoding.EncodeToString(bin), "encoding": "base64"},
		{"value": "third", "timestamp": 1_700_000_000_123},
	}})
	var ack obj
	var recs []any
	for ack == nil || len(recs) < 3 {
		m := readJSON(t, ws)
		switch m["type"] {
		case "ack":
			ack = m
		case "messages":
			require.Equal(t, "t", m["topic"])
			require.EqualValues(t, 1, m["partition"])
			recs = append(recs, m["records"].([]any)...)
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
	require.EqualValues(t, 4, ack["id"])
	require.Equal(t, []any{obj{"partition": 1.0, "offset": 0.0}, obj{"partition": 1.0, "offset": 1.0},
		obj{"partition": 1.0, "offset": 2.0}}, ack["acks"])
	require.Len(t, recs, 3)
	r0, r1, r2 := recs[0].(obj), recs[1].(obj), recs[2].(obj)
	require.EqualValues(t, 0, r0["offset"])
	require.Equal(t, "k1", r0["key"])
	require.Equal(t, "hello \"world\"\n", r0["value"])
	require.Equal(t, []any{obj{"key": "h", "value": "v"}}, r0["headers"])
	require.EqualValues(t, 1, r1["offset"])
	require.Equal(t, "base64", r1["encoding"], "a value that is not UTF-8 comes in base64")
	require.Equal(t, base64.StdEncoding.EncodeToString(bin), r1["value"])
	require.NotContains(t, r1, "key", "no key stays no key")
	require.EqualValues(t, 2, r2["offset"])
	require.EqualValues(t, 1_700_000_000_123, r2["timestamp"])

	// A per-record partition overrides the command's; records of both
	// partitions are acknowledged in the command's order.
	r = callJSON(t, ws, obj{"op": "publish", "id": 5, "topic": "t", "records": []obj{
		{"value": "a", "partition": 0}, {"value": "b", "partition": 1}, {"value": "c", "partition": 0}}})
	require.Equal(t, []any{obj{"partition": 0.0, "offset": 0.0}, obj{"partition": 1.0, "offset": 3.0},
		obj{"partition": 0.0, "offset": 1.0}}, r["acks"], "%v", r)

	// Base64 deliveries on request.
	ws2 := dial(t, s, nil)
	r = callJSON(t, ws2, obj{"op": "subscribe", "id": 1, "topic": "t", "partition": 0, "from": obj{"offset": 1}, "encoding": "base64"})
	require.Equal(t, "ok", r["type"], "%v", r)
	m := readJSON(t, ws2)
	require.Equal(t, "messages", m["type"])
	rec := m["records"].([]any)[0].(obj)
	require.EqualValues(t, 1, rec["offset"])
	require.Equal(t, base64.StdEncoding.EncodeToString([]byte("c")), rec["value"])

	r = callJSON(t, ws, obj{"op": "unsubscribe", "id": 6, "topic": "t", "partition": 1})
	require.Equal(t, "ok", r["type"], "%v", r)
	r = callJSON(t, ws, obj{"op": "unsubscribe", "id": 7, "topic": "t", "partition": 1})
	require.Equal(t, "error", r["type"])
	require.EqualValues(t, wire.CodeNotSubscribed, r["code"])

	r = callJSON(t, ws, obj{"op": "delete_topic", "id": 8, "topic": "t"})
	require.Equal(t, "ok", r["type"], "%v", r)
}

// TestBinaryProtocol drives the binary encoding: deliveries in binary
// frames of many records, with keys, headers, offsets and timestamps
// intact, and acks as runs.
func TestBinaryProtocol(t *testing.T) {
	e := startBroker(t, nil)
	s := serve(t, e, nil, "")
	ws := dial(t, s, nil)

	sendBin(t, ws, wsproto.AppendCreateTopic(nil, 1, "b", []byte(`{"partitions":3}`)))
	r := readBin(t, ws)
	require.Equal(t, wsproto.OpOK, r.Op, "%v", r.Err())
	require.EqualValues(t, 1, r.ID)
	sendBin(t, ws, wsproto.AppendTopicCommand(nil, wsproto.OpDescribeTopic, 2, "b", 0))
	r = readBin(t, ws)
	require.Equal(t, wsproto.OpTopic, r.Op)
	var doc wsproto.TopicDoc
	require.NoError(t, json.Unmarshal(r.JSON, &doc))
	require.Len(t, doc.Info().Partitions, 3)

	sendBin(t, ws, wsproto.AppendSubscribe(nil, 3, "b", 2, wire.Start{Kind: wire.StartEarliest}))
	r = readBin(t, ws)
	require.Equal(t, wsproto.OpOK, r.Op, "%v", r.Err())

	const n = 500
	frame, at := wsproto.AppendPublishHead(nil, 4, "b", 2)
	ts := time.Unix(1_700_000_000, 42)
	for i := range n {
		m := client.Message{Value: fmt.Appendf(nil, "value-%d", i), Timestamp: ts}
		if i%2 == 0 {
			m.Key = fmt.Appendf(nil, "key-%d", i)
			m.Headers = []client.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", i)}, {Key: "empty", Value: []byte{}}}
		}
		frame = wsproto.AppendRecord(frame, &m)
	}
	wsproto.SetCount(frame, at, n)
	sendBin(t, ws, frame)

	var ack *wsproto.Reply
	got := 0
	frames := 0
	var d client.Delivery
	for ack == nil || got < n {
		r := readBin(t, ws)
		switch r.Op {
		case wsproto.OpAck:
			ack = &r
		case wsproto.OpMessages:
			frames++
			require.Equal(t, "b", r.Topic)
			require.EqualValues(t, 2, r.Partition)
			for r.Next(&d) {
				require.EqualValues(t, got, d.Offset)
				require.Equal(t, fmt.Sprintf("value-%d", got), string(d.Value))
				require.Equal(t, ts.UnixNano(), d.Timestamp.UnixNano())
				if got%2 == 0 {
					require.Equal(t, fmt.Sprintf("key-%d", got), string(d.Key))
					require.Equal(t, []client.Header{{Key: "i", Value: fmt.Appendf(nil, "%d", got)}, {Key: "empty", Value: []byte{}}}, d.Headers)
				} else {
					require.Nil(t, d.Key)
					require.Empty(t, d.Headers)
				}
				got++
			}
			require.NoError(t, r.DeliveriesErr())
		default:
			t.Fatalf("unexpected op 0x%x: %v", r.Op, r.Err())
		}
	}
	require.EqualValues(t, 4, ack.ID)
	require.Equal(t, []wsproto.AckRun{{Partition: 2, Offset: 0, Count: n}}, ack.Runs)
	require.Less(t, frames, n, "deliveries come many records to a frame")

	sendBin(t, ws, wsproto.AppendTopicCommand(nil, wsproto.OpUnsubscribe, 5, "b", 2))
	r = readBin(t, ws)
	require.Equal(t, wsproto.OpOK, r.Op, "%v", r.Err())
	sendBin(t, ws, wsproto.AppendTopicCommand(nil, wsproto.OpDeleteTopic, 6, "b", 0))
	r = readBin(t, ws)
	require.Equal(t, wsproto.OpOK, r.Op, "%v", r.Err())
	sendBin(t, ws, wsproto.AppendTopicCommand(nil, wsproto.OpDescribeTopic, 7, "b", 0))
	r = readBin(t, ws)
	require.Equal(t, wsproto.OpError, r.Op)
	require.ErrorIs(t, r.Err(), client.ErrUnknownTopic)
	require.NoError(t, ws.Close(websocket.StatusNormalClosure, ""))
}
