package grpcgw

import (
	"context"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// maxFetchBytes bounds FetchRequest.max_bytes, so that an answer stays
// inside a client's default receive bound (4 MiB) but for one batch
// larger than the rest.
const maxFetchBytes = 2 << 20

// position converts a request's start position; absent is def.
func position(p *pb.Position, def client.Position) (client.Position, error) {
	if p == nil {
		return def, nil
	}
	switch k := p.Kind.(type) {
	case *pb.Position_Earliest:
		return client.Earliest, nil
	case *pb.Position_Latest:
		return client.Latest, nil
	case *pb.Position_Offset:
		if k.Offset < 0 {
			return def, invalid("offset must not be negative")
		}
		return client.AtOffset(k.Offset), nil
	case *pb.Position_TimeNs:
		return client.AtTime(time.Unix(0, k.TimeNs)), nil
	}
	return def, nil
}

// Fetch pulls records of one partition.
func (s *Server) Fetch(ctx context.Context, req *pb.FetchRequest) (*pb.FetchResponse, error) {
	from, err := position(req.Start, client.Earliest)
	if err != nil {
		return nil, err
	}
	if req.Partition < 0 {
		return nil, invalid("partition must not be negative")
	}
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	opts := []client.FetchOption{client.MaxBytes(maxFetchBytes)}
	if req.MaxBytes > 0 {
		opts[0] = client.MaxBytes(min(int(req.MaxBytes), maxFetchBytes))
	}
	if req.MaxWaitMs > 0 {
		opts = append(opts, client.MaxWait(time.Duration(req.MaxWaitMs)*time.Millisecond))
	}
	f, err := sess.Fetch(ctx, req.Topic, int(req.Partition), from, opts...)
	if err != nil {
		return nil, err
	}
	resp := &pb.FetchResponse{Next: f.Next, Start: f.Start, End: f.End, Records: make([]*pb.Delivery, len(f.Messages))}
	recs := make([]pb.Delivery, len(f.Messages)) // one allocation for all
	for i := range f.Messages {
		d := &f.Messages[i]
		r := &recs[i]
		r.Partition, r.Offset, r.Key, r.Value, r.TimestampNs = d.Partition, d.Offset, d.Key, d.Value, d.Timestamp.UnixNano()
		for _, h := range d.Headers {
			r.Headers = append(r.Headers, &pb.Header{Key: h.Key, Value: h.Value})
		}
		resp.Records[i] = r
	}
	s.g.Metrics().Delivered(via, len(recs))
	return resp, nil
}

// CreateTopic creates a topic.
func (s *Server) CreateTopic(ctx context.Context, req *pb.CreateTopicRequest) (*pb.CreateTopicResponse, error) {
	cfg, err := topicConfig(req.Partitions, req.Config)
	if err != nil {
		return nil, err
	}
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := sess.CreateTopic(ctx, req.Name, cfg); err != nil {
		return nil, err
	}
	return &pb.CreateTopicResponse{}, nil
}

// topicConfig parses a CreateTopicRequest's settings, keyed as
// TopicInfo.config shows them.
func topicConfig(partitions int32, kv map[string]string) (client.TopicConfig, error) {
	cfg := client.TopicConfig{Partitions: int(partitions)}
	for k, v := range kv {
		if err := gateway.SetTopicKey(&cfg, k, v); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// DeleteTopic deletes a topic.
func (s *Server) DeleteTopic(ctx context.Context, req *pb.DeleteTopicRequest) (*pb.DeleteTopicResponse, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := sess.DeleteTopic(ctx, req.Name); err != nil {
		return nil, err
	}
	return &pb.DeleteTopicResponse{}, nil
}

// ListTopics lists the topics.
func (s *Server) ListTopics(ctx context.Context, _ *pb.ListTopicsRequest) (*pb.ListTopicsResponse, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	list, err := sess.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListTopicsResponse{Topics: make([]*pb.ListTopicsResponse_Topic, len(list))}
	for i, t := range list {
		resp.Topics[i] = &pb.ListTopicsResponse_Topic{Name: t.Name, Partitions: int32(t.Partitions)}
	}
	return resp, nil
}

// DescribeTopic describes a topic.
func (s *Server) DescribeTopic(ctx context.Context, req *pb.DescribeTopicRequest) (*pb.TopicInfo, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	info, err := sess.DescribeTopic(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return topicInfo(info), nil
}

// UpdateTopic changes a topic's settings.
func (s *Server) UpdateTopic(ctx context.Context, req *pb.UpdateTopicRequest) (*pb.TopicInfo, error) {
	if len(req.Config) == 0 {
		return nil, invalid("no settings to change")
	}
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	info, err := sess.UpdateTopic(ctx, req.Name, req.Config)
	if err != nil {
		return nil, err
	}
	return topicInfo(info), nil
}

func topicInfo(info client.TopicInfo) *pb.TopicInfo {
	out := &pb.TopicInfo{Name: info.Name, Config: info.Config, Defaults: info.Defaults,
		Partitions: make([]*pb.PartitionInfo, len(info.Partitions))}
	for i, p := range info.Partitions {
		out.Partitions[i] = &pb.PartitionInfo{Id: int32(p.ID), StartOffset: p.StartOffset, EndOffset: p.EndOffset,
			Subscribers: int32(p.Subscribers), Bytes: p.Bytes, Segments: int32(p.Segments), Corrupt: int32(p.Corrupt),
			State: p.State.String(), Reason: p.Reason}
	}
	return out
}

// ListGroups lists the consumer groups.
func (s *Server) ListGroups(ctx context.Context, _ *pb.ListGroupsRequest) (*pb.ListGroupsResponse, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	list, err := sess.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListGroupsResponse{Groups: make([]*pb.ListGroupsResponse_Group, len(list))}
	for i, g := range list {
		resp.Groups[i] = &pb.ListGroupsResponse_Group{Group: g.Group, Topic: g.Topic, Members: g.Members}
	}
	return resp, nil
}

// DescribeGroup describes a consumer group.
func (s *Server) DescribeGroup(ctx context.Context, req *pb.DescribeGroupRequest) (*pb.GroupInfo, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	g, err := sess.DescribeGroup(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	out := &pb.GroupInfo{Group: g.Group, Topic: g.Topic, Generation: g.Generation, Mode: g.Mode.String(),
		Members: g.Members, Partitions: make([]*pb.GroupInfo_Partition, len(g.Partitions))}
	for i, p := range g.Partitions {
		out.Partitions[i] = &pb.GroupInfo_Partition{Partition: p.Partition, Owner: p.Owner, Committed: p.Committed,
			End: p.End, Lag: p.Lag, Pending: p.Pending}
	}
	return out, nil
}

// ResetGroup moves a consumer group's committed offsets.
func (s *Server) ResetGroup(ctx context.Context, req *pb.ResetGroupRequest) (*pb.ResetGroupResponse, error) {
	if req.To == nil || req.To.Kind == nil {
		return nil, invalid("a reset needs a position (to)")
	}
	to, err := position(req.To, client.Earliest)
	if err != nil {
		return nil, err
	}
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := sess.ResetGroup(ctx, req.Group, to); err != nil {
		return nil, err
	}
	return &pb.ResetGroupResponse{}, nil
}
