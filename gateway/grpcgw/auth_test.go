package grpcgw_test

import (
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

const adminToken = "grpc-test-admin-token-0123456789"

// startSecure runs a broker with authentication on and the gRPC front end
// over TLS with the development certificates; mutual requires client
// certificates.
func startSecure(t *testing.T, mutual bool) (*engine.Engine, *devcert.Bundle) {
	t.Helper()
	b, err := devcert.Generate()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, b.Write(dir, false))
	e := startBroker(t, func(c *engine.Config) {
		c.Auth, c.AdminToken, c.AutoCreateTopics = true, adminToken, false
		c.HTTPAddr = "127.0.0.1:0" // the admin token is the HTTP side's
		c.TLSCertFile = filepath.Join(dir, devcert.Files.Server)
		c.TLSKeyFile = filepath.Join(dir, devcert.Files.ServerKey)
		if mutual {
			c.TLSAddr = "127.0.0.1:0"
			c.TLSClientCAFile = filepath.Join(dir, devcert.Files.CA)
		}
	})
	return e, b
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// Over TLS with a bearer token: publish, subscribe, fetch; a missing or
// wrong token is Unauthenticated; a user the rules do not let at a topic
// is PermissionDenied.
func TestTLSBearerTokenAndPermissions(t *testing.T) {
	e, b := startSecure(t, false)
	tc, err := b.ClientTLS(false)
	require.NoError(t, err)
	ctx := testCtx(t)
	admin, _ := dial(t, e.GRPCAddr(), tc, "Bearer "+adminToken)
	_, err = admin.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "secure", Partitions: 2, Config: map[string]string{"storage": "memory"}})
	require.NoError(t, err)
	_, err = admin.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "secure"})
	requireCode(t, codes.AlreadyExists, err)

	sub, err := admin.Subscribe(ctx, &pb.SubscribeRequest{Topic: "secure", Partition: part(1), Start: earliest()})
	require.NoError(t, err)
	first, err := sub.Recv()
	require.NoError(t, err)
	require.Empty(t, first.Records, "the first response says the subscription is in place")

	ack, err := admin.Publish(ctx, &pb.PublishRequest{Topic: "secure", Partition: part(1), Records: []*pb.Record{
		{Key: []byte("k"), Value: []byte("v1"), Headers: []*pb.Header{{Key: "h", Value: []byte("x")}}, TimestampNs: 1_700_000_000_000_000_000},
		{Value: []byte("v2")}}})
	require.NoError(t, err)
	require.Equal(t, []int32{1, 1}, ack.Partitions)
	require.Equal(t, []int64{0, 1}, ack.Offsets)

	var got []*pb.Delivery
	for len(got) < 2 {
		resp, err := sub.Recv()
		require.NoError(t, err)
		got = append(got, resp.Records...)
	}
	require.Equal(t, "v1", string(got[0].Value))
	require.Equal(t, "k", string(got[0].Key))
	require.Equal(t, "h", got[0].Headers[0].Key)
	require.Equal(t, int64(1_700_000_000_000_000_000), got[0].TimestampNs)
	require.Equal(t, int64(1), got[1].Offset)

	f, err := admin.Fetch(ctx, &pb.FetchRequest{Topic: "secure", Partition: 1, Start: &pb.Position{Kind: &pb.Position_Offset{Offset: 1}}})
	require.NoError(t, err)
	require.Len(t, f.Records, 1)
	require.Equal(t, "v2", string(f.Records[0].Value))
	require.Equal(t, int64(2), f.Next)

	info, err := admin.DescribeTopic(ctx, &pb.DescribeTopicRequest{Name: "secure"})
	require.NoError(t, err)
	require.Len(t, info.Partitions, 2)
	require.Equal(t, int64(2), info.Partitions[1].EndOffset)
	require.Equal(t, "online", info.Partitions[1].State)
	upd, err := admin.UpdateTopic(ctx, &pb.UpdateTopicRequest{Name: "secure", Config: map[string]string{"max-deliveries": "7"}})
	require.NoError(t, err)
	require.Equal(t, "7", upd.Config["max-deliveries"])
	list, err := admin.ListTopics(ctx, &pb.ListTopicsRequest{})
	require.NoError(t, err)
	require.Contains(t, list.Topics, &pb.ListTopicsResponse_Topic{Name: "secure", Partitions: 2})
	_, err = admin.DescribeGroup(ctx, &pb.DescribeGroupRequest{Group: "nobody"})
	requireCode(t, codes.NotFound, err)
	_, err = admin.ListGroups(ctx, &pb.ListGroupsRequest{})
	require.NoError(t, err)
	_, err = admin.ResetGroup(ctx, &pb.ResetGroupRequest{Group: "g"})
	requireCode(t, codes.InvalidArgument, err)

	for name, hdr := range map[string]string{"missing": "", "wrong": "Bearer not-the-token", "scheme": "Digest abc",
		"bad basic": "Basic %%%"} {
		t.Run(name, func(t *testing.T) {
			c, _ := dial(t, e.GRPCAddr(), tc, hdr)
			_, err := c.Publish(ctx, &pb.PublishRequest{Topic: "secure", Records: records("x")})
			requireCode(t, codes.Unauthenticated, err)
			s, err := c.Subscribe(ctx, &pb.SubscribeRequest{Topic: "secure"})
			if err == nil {
				_, err = s.Recv()
			}
			requireCode(t, codes.Unauthenticated, err)
		})
	}

	require.NoError(t, e.Security().AddUser("alice", "", auth.RoleUser, "correct horse"))
	alice, _ := dial(t, e.GRPCAddr(), tc, basic("alice", "correct horse"))
	_, err = alice.Publish(ctx, &pb.PublishRequest{Topic: "secure", Records: records("x")})
	requireCode(t, codes.PermissionDenied, err)
	_, err = alice.Fetch(ctx, &pb.FetchRequest{Topic: "secure"})
	requireCode(t, codes.PermissionDenied, err)
	_, err = e.Security().AddRule(auth.Rule{Principal: "alice", Resource: auth.ResTopic, Name: "secure", Ops: auth.OpAll})
	require.NoError(t, err)
	ack, err = alice.Publish(ctx, &pb.PublishRequest{Topic: "secure", Partition: part(0), Records: records("by alice")})
	require.NoError(t, err)
	require.Equal(t, []int64{0}, ack.Offsets)
	wrong, _ := dial(t, e.GRPCAddr(), tc, basic("alice", "wrong horse"))
	_, err = wrong.ListTopics(ctx, &pb.ListTopicsRequest{})
	requireCode(t, codes.Unauthenticated, err)
}

// With mutual TLS, a verified client certificate is the caller's identity
// when it sends no authorization header.
func TestMutualTLSCertificateIdentity(t *testing.T) {
	e, b := startSecure(t, true)
	tc, err := b.ClientTLS(true)
	require.NoError(t, err)
	ctx := testCtx(t)
	c, _ := dial(t, e.GRPCAddr(), tc, "")
	_, err = c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "certs"})
	requireCode(t, codes.PermissionDenied, err)
	_, err = e.Security().AddRule(auth.Rule{Principal: devcert.ClientName, Resource: auth.ResTopic, Name: "certs", Ops: auth.OpAll})
	require.NoError(t, err)
	_, err = c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "certs"})
	require.NoError(t, err)
	ack, err := c.Publish(ctx, &pb.PublishRequest{Topic: "certs", Records: records("by certificate")})
	require.NoError(t, err)
	require.Equal(t, []int64{0}, ack.Offsets)

	// Without a client certificate the handshake fails.
	noCert, err := b.ClientTLS(false)
	require.NoError(t, err)
	anon, _ := dial(t, e.GRPCAddr(), noCert, "")
	_, err = anon.ListTopics(ctx, &pb.ListTopicsRequest{})
	requireCode(t, codes.Unavailable, err)
}
