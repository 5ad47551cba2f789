package httpgw

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
)

// maxAdminBody bounds an admin request's body.
const maxAdminBody = 1 << 20

// TopicSummary is one topic of GET /v1/topics.
type TopicSummary struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
}

// TopicList is the body of GET /v1/topics.
type TopicList struct {
	Topics []TopicSummary `json:"topics"`
}

// CreateTopic is the body of POST /v1/topics. Config takes the keys of
// the native protocol's topic configuration (docs/ADMIN.md):
// max-subscribers, replicas, fsync, retention, retention-bytes,
// dead-letter-topic, max-deliveries, encryption; Storage may be given
// beside them or there.
type CreateTopic struct {
	Name       string            `json:"name"`
	Partitions int               `json:"partitions"`
	Storage    string            `json:"storage,omitempty"`
	Config     map[string]string `json:"config,omitempty"`
}

// UpdateTopic is the body of PATCH /v1/topics/{topic}: the settings to
// change.
type UpdateTopic struct {
	Config map[string]string `json:"config"`
}

// Topic is the body of GET /v1/topics/{topic}, and of the answers to
// POST and PATCH.
type Topic struct {
	Name string `json:"name"`
	// Config is the topic's settings as stored; Defaults the values that
	// settings left at their default stand for.
	Config     map[string]string `json:"config"`
	Defaults   map[string]string `json:"defaults,omitempty"`
	Partitions []Partition       `json:"partitions"`
}

// Partition is one partition of a Topic.
type Partition struct {
	ID          int    `json:"id"`
	StartOffset int64  `json:"start_offset"`
	EndOffset   int64  `json:"end_offset"`
	Subscribers int    `json:"subscribers"`
	Bytes       int64  `json:"bytes"`
	Segments    int    `json:"segments"`
	State       string `json:"state"`
	Reason      string `json:"reason,omitempty"`
}

func topicOf(ti client.TopicInfo) Topic {
	t := Topic{Name: ti.Name, Config: ti.Config, Defaults: ti.Defaults, Partitions: make([]Partition, len(ti.Partitions))}
	for i, p := range ti.Partitions {
		t.Partitions[i] = Partition{ID: p.ID, StartOffset: p.StartOffset, EndOffset: p.EndOffset, Subscribers: p.Subscribers,
			Bytes: p.Bytes, Segments: p.Segments, State: p.State.String(), Reason: p.Reason}
	}
	return t
}

func (h *handler) listTopics(w http.ResponseWriter, r *http.Request) {
	h.session(w, r, func(s *gateway.Session) error {
		list, err := s.ListTopics(r.Context())
		if err != nil {
			return err
		}
		out := TopicList{Topics: make([]TopicSummary, len(list))}
		for i, t := range list {
			out.Topics[i] = TopicSummary{Name: t.Name, Partitions: t.Partitions}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (h *handler) createTopic(w http.ResponseWriter, r *http.Request) {
	var req CreateTopic
	err := readJSON(w, r, &req)
	var cfg client.TopicConfig
	if err == nil {
		cfg, err = topicConfig(req)
	}
	if err != nil {
		h.g.Metrics().Request(via, err)
		h.fail(w, err)
		return
	}
	h.session(w, r, func(s *gateway.Session) error {
		if err := s.CreateTopic(r.Context(), req.Name, cfg); err != nil {
			return err
		}
		ti, err := s.DescribeTopic(r.Context(), req.Name)
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/v1/topics/"+req.Name)
		writeJSON(w, http.StatusCreated, topicOf(ti))
		return nil
	})
}

// topicConfig turns a CreateTopic into the client's TopicConfig.
func topicConfig(req CreateTopic) (client.TopicConfig, error) {
	cfg := client.TopicConfig{Partitions: req.Partitions, Storage: req.Storage}
	if req.Name == "" {
		return cfg, badRequest("name is required")
	}
	if req.Partitions < 0 {
		return cfg, badRequest("partitions must not be negative")
	}
	for k, v := range req.Config {
		if err := gateway.SetTopicKey(&cfg, k, v); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

func (h *handler) describeTopic(w http.ResponseWriter, r *http.Request) {
	h.session(w, r, func(s *gateway.Session) error {
		ti, err := s.DescribeTopic(r.Context(), r.PathValue("topic"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, topicOf(ti))
		return nil
	})
}

func (h *handler) deleteTopic(w http.ResponseWriter, r *http.Request) {
	h.session(w, r, func(s *gateway.Session) error {
		if err := s.DeleteTopic(r.Context(), r.PathValue("topic")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (h *handler) updateTopic(w http.ResponseWriter, r *http.Request) {
	var req UpdateTopic
	err := readJSON(w, r, &req)
	if err == nil && len(req.Config) == 0 {
		err = badRequest(`the body must be {"config": {"key": "value", ...}} with at least one key`)
	}
	if err != nil {
		h.g.Metrics().Request(via, err)
		h.fail(w, err)
		return
	}
	h.session(w, r, func(s *gateway.Session) error {
		ti, err := s.UpdateTopic(r.Context(), r.PathValue("topic"), req.Config)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, topicOf(ti))
		return nil
	})
}

// readJSON decodes an admin request's body into v, refusing unknown
// fields and trailing data.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("malformed JSON: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON: data after the object")
	}
	return nil
}
