package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// A message published on each protocol (native, gRPC, HTTP, WebSocket) is
// received on every other, with its key, headers, value and offset
// intact: every front end drives the same sessions over the same log.
func TestInteropEveryProtocolReadsEveryOther(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) {
		c.HTTPAddr, c.GRPCAddr, c.AutoCreateTopics = "127.0.0.1:0", "127.0.0.1:0", false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	native, err := client.Dial(ctx, e.Addr().String())
	require.NoError(t, err)
	defer func() { _ = native.Close() }()
	require.NoError(t, native.CreateTopic(ctx, "interop", client.TopicConfig{Partitions: 1}))

	cc, err := grpc.NewClient(e.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = cc.Close() }()
	rpc := pb.NewBrokerClient(cc)
	base := "http://" + e.HTTPAddr()
	ws, upgrade, err := websocket.Dial(ctx, "ws://"+e.HTTPAddr()+"/v1/ws", nil)
	require.NoError(t, err)
	if upgrade.Body != nil { // coder/websocket leaves it nil after an upgrade
		_ = upgrade.Body.Close()
	}
	defer func() { _ = ws.CloseNow() }()

	// Each protocol publishes one message, in turn, each acknowledged
	// before the next: offsets 0 to 3 in this order.
	protocols := []string{"native", "grpc", "http", "ws"}
	want := make([]record, len(protocols))
	for i, p := range protocols {
		want[i] = record{Offset: int64(i), Key: "key-" + p, Value: "value from " + p,
			Headers: []header{{"via", p}, {"seq", fmt.Sprint(i)}}}
	}
	publish := map[string]func(r record) int64{
		"native": func(r record) int64 {
			ack, err := native.Publish(ctx, "interop", client.Message{Key: []byte(r.Key), Value: []byte(r.Value),
				Headers: []client.Header{{Key: "via", Value: []byte("native")}, {Key: "seq", Value: []byte("0")}}})
			require.NoError(t, err)
			return ack.Offset
		},
		"grpc": func(r record) int64 {
			resp, err := rpc.Publish(ctx, &pb.PublishRequest{Topic: "interop", Records: []*pb.Record{{Key: []byte(r.Key),
				Value: []byte(r.Value), Headers: []*pb.Header{{Key: "via", Value: []byte("grpc")}, {Key: "seq", Value: []byte("1")}}}}})
			require.NoError(t, err)
			return resp.Offsets[0]
		},
		"http": func(r record) int64 {
			body, err := json.Marshal(r.publishable())
			require.NoError(t, err)
			resp, err := http.Post(base+"/v1/topics/interop/messages", "application/json", bytes.NewReader(body))
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var ans struct{ Records []record }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&ans))
			return ans.Records[0].Offset
		},
		"ws": func(r record) int64 {
			cmd, err := json.Marshal(map[string]any{"op": "publish", "id": 1, "topic": "interop",
				"records": []any{r.publishable()}})
			require.NoError(t, err)
			require.NoError(t, ws.Write(ctx, websocket.MessageText, cmd))
			_, msg, err := ws.Read(ctx)
			require.NoError(t, err)
			var ans struct {
				Type string
				Acks []record
			}
			require.NoError(t, json.Unmarshal(msg, &ans), "%s", msg)
			require.Equal(t, "ack", ans.Type, "%s", msg)
			return ans.Acks[0].Offset
		},
	}
	for i, p := range protocols {
		require.Equal(t, int64(i), publish[p](want[i]), "%s's publish", p)
	}

	read := map[string]func() []record{
		"native fetch": func() []record {
			f, err := native.Fetch(ctx, "interop", 0, client.Earliest)
			require.NoError(t, err)
			return fromDeliveries(f.Messages)
		},
		"native subscribe": func() []record {
			ch := make(chan client.Delivery, len(want))
			sub, err := native.Subscribe(ctx, "interop", func(d *client.Delivery) { ch <- d.Clone() },
				client.StartAt(client.Earliest))
			require.NoError(t, err)
			defer func() { _ = sub.Unsubscribe(ctx) }()
			var got []client.Delivery
			for range want {
				got = append(got, <-ch)
			}
			return fromDeliveries(got)
		},
		"grpc fetch": func() []record {
			resp, err := rpc.Fetch(ctx, &pb.FetchRequest{Topic: "interop", Start: &pb.Position{Kind: &pb.Position_Earliest{Earliest: true}}})
			require.NoError(t, err)
			return fromGRPC(resp.Records)
		},
		"grpc subscribe": func() []record {
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			st, err := rpc.Subscribe(sctx, &pb.SubscribeRequest{Topic: "interop", Start: &pb.Position{Kind: &pb.Position_Earliest{Earliest: true}}})
			require.NoError(t, err)
			var got []*pb.Delivery
			for len(got) < len(want) {
				resp, err := st.Recv()
				require.NoError(t, err)
				got = append(got, resp.Records...)
			}
			return fromGRPC(got)
		},
		"http fetch": func() []record {
			resp, err := http.Get(base + "/v1/topics/interop/partitions/0/messages?offset=earliest")
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var ans struct{ Records []record }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&ans))
			return ans.Records
		},
		"http stream": func() []record {
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			req, err := http.NewRequestWithContext(sctx, http.MethodGet, base+"/v1/topics/interop/stream?from=earliest", nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			var got []record
			sc := bufio.NewScanner(resp.Body)
			for len(got) < len(want) && sc.Scan() {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var r record
					require.NoError(t, json.Unmarshal([]byte(data), &r), data)
					got = append(got, r)
				}
			}
			require.NoError(t, sc.Err())
			return got
		},
		"ws subscribe": func() []record {
			sub, err := json.Marshal(map[string]any{"op": "subscribe", "id": 2, "topic": "interop", "from": "earliest"})
			require.NoError(t, err)
			require.NoError(t, ws.Write(ctx, websocket.MessageText, sub))
			var got []record
			for len(got) < len(want) {
				_, msg, err := ws.Read(ctx)
				require.NoError(t, err)
				var m struct {
					Type    string
					Records []record
				}
				require.NoError(t, json.Unmarshal(msg, &m), "%s", msg)
				got = append(got, m.Records...)
			}
			return got
		},
	}
	for name, r := range read {
		got := r()
		for i := range got {
			got[i].Timestamp, got[i].Partition = 0, 0
		}
		require.Equal(t, want, got, "read by %s", name)
	}
}

// record is a message as the HTTP and WebSocket gateways write it, and
// what the test compares.
type record struct {
	Partition int32    `json:"partition,omitempty"`
	Offset    int64    `json:"offset"`
	Timestamp int64    `json:"timestamp,omitempty"`
	Key       string   `json:"key"`
	Value     string   `json:"value"`
	Headers   []header `json:"headers"`
}

type header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// publishable is r as a publish takes it: no offset.
func (r record) publishable() map[string]any {
	return map[string]any{"key": r.Key, "value": r.Value, "headers": r.Headers}
}

func fromDeliveries(ds []client.Delivery) []record {
	out := make([]record, len(ds))
	for i, d := range ds {
		out[i] = record{Offset: d.Offset, Key: string(d.Key), Value: string(d.Value)}
		for _, h := range d.Headers {
			out[i].Headers = append(out[i].Headers, header{h.Key, string(h.Value)})
		}
	}
	return out
}

func fromGRPC(ds []*pb.Delivery) []record {
	out := make([]record, len(ds))
	for i, d := range ds {
		out[i] = record{Offset: d.Offset, Key: string(d.Key), Value: string(d.Value)}
		for _, h := range d.Headers {
			out[i].Headers = append(out[i].Headers, header{h.Key, string(h.Value)})
		}
	}
	return slices.Clip(out)
}
