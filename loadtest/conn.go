package loadtest

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// conn is one producer's or subscriber's client: a client.Client (a
// connection to the broker), or, when Config.Server names several nodes,
// a client.Cluster, which sends each partition to the node that leads it
// (a connection per node it uses).
type conn interface {
	admin
	PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error
	PublishBatchAsync(ctx context.Context, topic string, msgs []client.Message, opts ...client.PublishOption) error
	Flush(ctx context.Context) error
	Close() error
	subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error)
}

// admin is what the run's topic set-up needs of a client.
type admin interface {
	CreateTopic(ctx context.Context, name string, cfg client.TopicConfig) error
	DeleteTopic(ctx context.Context, name string) error
	DescribeTopic(ctx context.Context, name string) (client.TopicInfo, error)
}

// subscription is a subscriber's subscription: a client.Subscription or a
// client.ClusterSubscription.
type subscription interface {
	Unsubscribe(ctx context.Context) error
	Done() <-chan struct{}
}

type singleConn struct{ *client.Client }

func (c singleConn) subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	return c.Subscribe(ctx, topic, h, opts...)
}

type clusterConn struct{ *client.Cluster }

func (c clusterConn) subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	return c.Subscribe(ctx, topic, h, opts...)
}

// cluster reports whether the run's server names several nodes: each
// producer and subscriber is then a cluster client.
func (c *Config) cluster() bool {
	n := 0
	for _, a := range strings.Split(c.Server, ",") {
		if strings.TrimSpace(a) != "" {
			n++
		}
	}
	return n > 1
}

// dialFunc connects one producer's or subscriber's client over a
// protocol. opts are the native client's options (name, TLS, credentials);
// another protocol takes what it needs of cfg instead.
type dialFunc func(ctx context.Context, cfg *Config, opts []client.Option) (conn, error)

// protocols are the protocols the tool speaks besides the native one, by
// Config.Protocol; each gateway's file registers its own.
var protocols = map[string]dialFunc{}

// registerProtocol makes Config.Protocol name take dial.
func registerProtocol(name string, dial dialFunc) { protocols[name] = dial }

// Protocols lists the protocols Config.Protocol may name.
func Protocols() []string {
	out := make([]string, 1, 1+len(protocols))
	out[0] = "native"
	for name := range protocols {
		out = append(out, name)
	}
	slices.Sort(out[1:])
	return out
}

// dialConn connects one producer's or subscriber's client.
func dialConn(ctx context.Context, cfg *Config, opts []client.Option) (conn, error) {
	if cfg.Protocol != "" && cfg.Protocol != "native" {
		dial, ok := protocols[cfg.Protocol]
		if !ok {
			return nil, fmt.Errorf("loadtest: unknown protocol %q (known: %s)", cfg.Protocol, strings.Join(Protocols(), ", "))
		}
		return dial(ctx, cfg, opts)
	}
	if cfg.cluster() {
		c, err := client.DialCluster(ctx, cfg.Server, opts...)
		if err != nil {
			return nil, err
		}
		return clusterConn{c}, nil
	}
	c, err := client.Dial(ctx, cfg.Server, opts...)
	if err != nil {
		return nil, err
	}
	return singleConn{c}, nil
}
