package engine

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// FuzzTopicConfigJSON feeds arbitrary bodies to the admin API's topic
// config parsing (PATCH and POST bodies): it never panics, refuses with
// INVALID_ARGUMENT only, and a config it accepts survives the round trip
// through the protocol's key/value form (what DescribeTopic reports and
// topics.json keeps).
func FuzzTopicConfigJSON(f *testing.F) {
	for _, s := range []string{
		`{"retention":"2h","fsync":"always"}`,
		`{"retention":7200,"retention_bytes":1048576,"max_subscribers":5}`,
		`{"storage":"memory","max_deliveries":3,"dead_letter_topic":"dead"}`,
		`{"fsync":"interval=10ms","retention":0}`,
		`{"retention":1e300}`, `{"max_subscribers":-1}`, `{"max-subscribers":5}`, `{"fsync":null}`, `{"x":{}}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	cfg := DefaultConfig()
	r := &registry{cfg: &cfg}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return
		}
		kvs, err := httpapi.ConfigKVs(m)
		if err == nil {
			var tc TopicConfig
			tc, err = r.parseTopicConfig(0, kvs)
			if err == nil {
				again, err := r.parseTopicConfig(uint32(tc.Partitions), tc.KVs())
				require.NoError(t, err, "%s", body)
				require.Equal(t, tc, again, "%s", body)
				return
			}
		}
		var we *wire.Error
		require.True(t, errors.As(err, &we), "%s: %v", body, err)
		require.Equal(t, wire.CodeInvalidArgument, we.Code, "%s: %v", body, err)
	})
}
