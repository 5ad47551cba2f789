package main

// --output json of topic and group commands: one JSON document on
// standard output, keys in snake_case, the same in every command. Values
// are typed: counts, offsets and bytes are numbers, durations are strings
// in the units the flags take ("1h", "7d"; "0s" keeps forever), and an
// offset or lag that does not exist (nothing committed) is null.

import (
	"encoding/json"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// printJSON writes v as indented JSON and a newline.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type jsonTopicSummary struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
}

type jsonTopic struct {
	Name string `json:"name"`
	// Config holds each setting's effective value; Defaults names those
	// that are the broker's default rather than the topic's own.
	Config     map[string]any  `json:"config"`
	Defaults   []string        `json:"defaults"`
	Partitions []jsonPartition `json:"partitions"`
}

type jsonPartition struct {
	ID          int    `json:"id"`
	StartOffset int64  `json:"start_offset"`
	EndOffset   int64  `json:"end_offset"`
	Bytes       int64  `json:"bytes"`
	Segments    int    `json:"segments"`
	Subscribers int    `json:"subscribers"`
	Corrupt     int    `json:"corrupt"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
}

// numericSettings are the topic settings whose values are numbers.
var numericSettings = map[string]bool{"max-subscribers": true, "retention-bytes": true, "max-deliveries": true}

func snake(key string) string { return strings.ReplaceAll(key, "-", "_") }

// topicJSON is describe's document: effective values, typed.
func topicJSON(info client.TopicInfo) jsonTopic {
	out := jsonTopic{Name: info.Name, Config: map[string]any{}, Defaults: []string{},
		Partitions: make([]jsonPartition, len(info.Partitions))}
	for _, k := range slices.Sorted(maps.Keys(info.Config)) {
		v := info.Effective(k)
		var val any = v
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && numericSettings[k] {
			val = n
		} else if d, err := time.ParseDuration(v); err == nil && k == "retention" {
			val = duration(d).String()
		}
		out.Config[snake(k)] = val
		if _, ok := info.Defaults[k]; ok {
			out.Defaults = append(out.Defaults, snake(k))
		}
	}
	for i, p := range info.Partitions {
		out.Partitions[i] = jsonPartition{ID: p.ID, StartOffset: p.StartOffset, EndOffset: p.EndOffset,
			Bytes: p.Bytes, Segments: p.Segments, Subscribers: p.Subscribers, Corrupt: p.Corrupt,
			State: p.State.String(), Reason: p.Reason}
	}
	return out
}

type jsonGroupSummary struct {
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	Members int    `json:"members"`
}

type jsonGroup struct {
	Group      string               `json:"group"`
	Topic      string               `json:"topic"`
	Mode       string               `json:"mode"`
	Generation uint32               `json:"generation"`
	Members    []string             `json:"members"`
	Partitions []jsonGroupPartition `json:"partitions"`
	Lag        int64                `json:"lag"` // over the partitions with a committed offset
}

type jsonGroupPartition struct {
	Partition int32   `json:"partition"`
	Owner     *string `json:"owner"`     // null when unassigned
	Committed *int64  `json:"committed"` // the next offset to consume; null when nothing is committed
	End       int64   `json:"end"`
	Lag       *int64  `json:"lag"`     // null when nothing is committed
	Pending   *uint32 `json:"pending"` // message mode only
}

func groupJSON(info client.GroupInfo) jsonGroup {
	out := jsonGroup{Group: info.Group, Topic: info.Topic, Mode: info.Mode.String(), Generation: info.Generation,
		Members: append([]string{}, info.Members...), Partitions: make([]jsonGroupPartition, len(info.Partitions)),
		Lag: info.Lag()}
	for i, p := range info.Partitions {
		jp := jsonGroupPartition{Partition: p.Partition, End: p.End}
		if p.Owner != "" {
			jp.Owner = &p.Owner
		}
		if p.Committed >= 0 {
			jp.Committed, jp.Lag = &p.Committed, &p.Lag
		}
		if info.Mode == client.AckMessage {
			jp.Pending = &p.Pending
		}
		out.Partitions[i] = jp
	}
	return out
}
