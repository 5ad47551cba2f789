package loadtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// ErrTopicMismatch is returned when the run's topic exists with settings
// other than the ones the run asked for: measuring it would report figures
// of a topic other than the one the flags describe.
var ErrTopicMismatch = errors.New("loadtest: the topic exists with other settings")

// TopicShape is what a run measured: the topic as the broker describes it,
// not as the flags asked for it.
type TopicShape struct {
	Name       string
	Storage    string // "disk", "memory" or "redis"
	Fsync      string // a disk topic's fsync policy; empty for memory
	Partitions int
}

func (t TopicShape) String() string {
	s := fmt.Sprintf("%s: %s", t.Name, t.Storage)
	if t.Storage == "disk" {
		s += ", fsync " + t.Fsync
	}
	unit := "partitions"
	if t.Partitions == 1 {
		unit = "partition"
	}
	return fmt.Sprintf("%s, %d %s", s, t.Partitions, unit)
}

// asksStorage reports whether the config asks for particular topic
// settings. When it does not, an existing topic is used as it is.
func (c *Config) asksStorage() bool {
	return c.Durable || c.Fsync != "" || c.Partitions > 0 || c.Storage != ""
}

// wanted is the topic the config asks for, with defaults filled in.
func (c *Config) wanted() TopicShape {
	t := TopicShape{Name: c.Topic, Storage: "memory", Partitions: max(c.Partitions, 1)}
	if c.Storage == "redis" {
		t.Storage = "redis"
	}
	if c.Durable {
		t.Storage, t.Fsync = "disk", c.Fsync
		if t.Fsync == "" {
			t.Fsync = "always"
		}
	}
	return t
}

// ensureTopic creates the run's topic, or checks an existing one against
// what the config asks (recreating it on a mismatch with Recreate), and
// returns the topic as the broker describes it.
func ensureTopic(ctx context.Context, admin admin, cfg *Config) (TopicShape, bool, error) {
	want := cfg.wanted()
	err := admin.CreateTopic(ctx, want.Name, client.TopicConfig{Partitions: want.Partitions,
		Storage: want.Storage, Fsync: want.Fsync})
	existed := errors.Is(err, client.ErrTopicExists)
	if err != nil && !existed {
		return TopicShape{}, false, fmt.Errorf("create topic %s: %w", want.Name, err)
	}
	have, err := describeTopic(ctx, admin, want.Name)
	if err != nil || !existed || !cfg.asksStorage() {
		return have, existed, err
	}
	diffs := differences(have, want, cfg.Partitions > 0)
	if len(diffs) == 0 {
		return have, true, nil
	}
	if !cfg.Recreate {
		return have, true, fmt.Errorf("%w: %s has %s; use --recreate to delete and recreate it, or another --topic",
			ErrTopicMismatch, want.Name, strings.Join(diffs, ", "))
	}
	if err := admin.DeleteTopic(ctx, want.Name); err != nil {
		return have, true, fmt.Errorf("recreate topic %s: %w", want.Name, err)
	}
	if err := admin.CreateTopic(ctx, want.Name, client.TopicConfig{Partitions: want.Partitions,
		Storage: want.Storage, Fsync: want.Fsync}); err != nil {
		return have, true, fmt.Errorf("recreate topic %s: %w", want.Name, err)
	}
	have, err = describeTopic(ctx, admin, want.Name)
	return have, false, err
}

// differences names each setting of have that is not what want asks, as
// "storage memory (asked disk)". Partitions count only when asked for.
func differences(have, want TopicShape, partitions bool) []string {
	var d []string
	if have.Storage != want.Storage {
		d = append(d, fmt.Sprintf("storage %s (asked %s)", have.Storage, want.Storage))
	} else if want.Storage == "disk" && canonicalFsync(have.Fsync) != canonicalFsync(want.Fsync) {
		d = append(d, fmt.Sprintf("fsync %s (asked %s)", have.Fsync, want.Fsync))
	}
	if partitions && have.Partitions != want.Partitions {
		d = append(d, fmt.Sprintf("partitions %d (asked %d)", have.Partitions, want.Partitions))
	}
	return d
}

// canonicalFsync spells an fsync policy one way, so that interval=1s and
// interval=1000ms compare equal.
func canonicalFsync(s string) string {
	if v, ok := strings.CutPrefix(s, "interval="); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return "interval=" + strconv.FormatInt(int64(d), 10)
		}
	}
	return s
}

func describeTopic(ctx context.Context, admin admin, name string) (TopicShape, error) {
	info, err := admin.DescribeTopic(ctx, name)
	if err != nil {
		return TopicShape{}, fmt.Errorf("describe topic %s: %w", name, err)
	}
	t := TopicShape{Name: name, Storage: info.Config["storage"], Partitions: len(info.Partitions)}
	if t.Storage == "disk" {
		t.Fsync = info.Config["fsync"]
	}
	return t, nil
}
