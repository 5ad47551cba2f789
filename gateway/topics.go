package gateway

import (
	"strconv"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// SetTopicKey sets one setting of a topic to be created, keyed and
// written as a topic's description shows it (client.TopicInfo.Config):
// what the gRPC and HTTP front ends take. A retention or retention-bytes
// of 0 is no bound. An unknown key or a bad value is INVALID_ARGUMENT.
func SetTopicKey(cfg *client.TopicConfig, k, v string) error {
	var err error
	switch k {
	case "storage":
		cfg.Storage = v
	case "fsync":
		cfg.Fsync = v
	case "dead-letter-topic":
		cfg.DeadLetterTopic = v
	case "encryption":
		cfg.Encryption = v
	case "max-subscribers":
		cfg.MaxSubscribers, err = strconv.Atoi(v)
	case "max-deliveries":
		cfg.MaxDeliveries, err = strconv.Atoi(v)
	case "replicas":
		cfg.Replicas, err = strconv.Atoi(v)
	case "retention":
		if cfg.Retention, err = time.ParseDuration(v); err == nil && cfg.Retention == 0 {
			cfg.Retention = client.KeepForever
		}
	case "retention-bytes":
		if cfg.RetentionBytes, err = strconv.ParseInt(v, 10, 64); err == nil && cfg.RetentionBytes == 0 {
			cfg.RetentionBytes = client.UnboundedBytes
		}
	default:
		return wire.Errorf(wire.CodeInvalidArgument, "unknown topic setting "+strconv.Quote(k))
	}
	if err != nil {
		return wire.Errorf(wire.CodeInvalidArgument, "topic setting "+k+": bad value "+strconv.Quote(v))
	}
	return nil
}
