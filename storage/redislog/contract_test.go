package redislog

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/logtest"
)

// TestContractRedisLog runs the partition-log contract suite (package
// logtest), unchanged, on the Redis log: one redis-server for the test,
// a partition of its own for every Subject.
func TestContractRedisLog(t *testing.T) {
	_, s := openStore(t, redistest.Options{})
	var n atomic.Int64
	logtest.Run(t, logtest.Impl{
		Name: "redis",
		New: func(t testing.TB) logtest.Subject {
			sub := &redisSubject{s: s, topic: "contract-" + strconv.FormatInt(n.Add(1), 10)}
			sub.log = sub.open(t, true)
			return sub
		},
		Durable:        true,
		CanCorrupt:     true,
		ExactRetention: true,
	})
}

type redisSubject struct {
	s     *Store
	topic string
	log   *Log
}

func (r *redisSubject) open(t testing.TB, create bool) *Log {
	t.Helper()
	l, err := r.s.OpenLog(context.Background(), r.topic, 0, create)
	require.NoError(t, err)
	return l
}

func (r *redisSubject) Log() storage.Log { return r.log }

func (r *redisSubject) Restart(t testing.TB) storage.Log {
	require.NoError(t, r.log.Close())
	r.log = r.open(t, false)
	return r.log
}

func (r *redisSubject) Reopen(t testing.TB) storage.Log {
	r.log = r.open(t, false)
	return r.log
}

func (r *redisSubject) Close(t testing.TB) { require.NoError(t, r.log.Drop()) }

// corruptScript flips a byte in the middle of the batch of the entry at
// ARGV[1]: a stream entry cannot be changed in place, so it removes that
// entry and the ones after it, sets the stream's last ID back, and adds
// them again, the one damaged.
var corruptScript = rueidis.NewLuaScript(`
local base = ARGV[1]
local tail = redis.call('XRANGE', KEYS[1], base, '+')
local ids = {}
for i, e in ipairs(tail) do ids[i] = e[1] end
redis.call('XDEL', KEYS[1], unpack(ids))
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top == 0 then
  redis.call('XSETID', KEYS[1], '0-1', 'ENTRIESADDED', 0, 'MAXDELETEDID', '0-1')
else
  redis.call('XSETID', KEYS[1], top[1][1], 'ENTRIESADDED', redis.call('XLEN', KEYS[1]), 'MAXDELETEDID', top[1][1])
end
for i, e in ipairs(tail) do
  local f = e[2]
  for j = 1, #f, 2 do
    if i == 1 and f[j] == 'b' then
      local b = f[j+1]
      local k = math.floor(#b / 2)
      local c = string.char((string.byte(b, k) + 1) % 256)
      f[j+1] = string.sub(b, 1, k-1) .. c .. string.sub(b, k+1)
    end
  end
  redis.call('XADD', KEYS[1], e[1], unpack(f))
end
return #tail
`)

func (r *redisSubject) Corrupt(t testing.TB, base int64) {
	t.Helper()
	n, err := corruptScript.Exec(context.Background(), r.s.client, []string{r.log.stream},
		[]string{strconv.FormatInt(base, 10)}).AsInt64()
	require.NoError(t, err)
	require.Positive(t, n, "no entry at %d", base)
}
