package redislog

import "github.com/redis/rueidis"

// A partition is two keys that share a hash tag (so that a Redis Cluster
// would keep them on one node): the stream KEYS[1], one entry per record
// batch, whose ID is "<base offset>-1" (not -0: Redis refuses the ID 0-0;
// and it refuses an XADD whose ID is
// not above every ID the stream generated, so the log cannot go back by
// mistake; a cut sets that mark back with XSETID); and the hash KEYS[2]
// with the log's end offset ("end"), the bytes appended through it ("z")
// and the greatest timestamp appended ("t"). Each entry has the batch
// ("b"), its greatest timestamp ("m"), the greatest timestamp of it and
// every batch appended before it ("t"), and the bytes appended before it
// ("z"); the numbers are zero-padded to 19 digits, so that comparing them
// as strings, in Lua, compares them as numbers (Lua's numbers are doubles,
// too narrow for nanosecond timestamps).
//
// Appends are transactions (Log.transact). The scripts here run inside
// Redis, each atomically, for what needs a loop there: removing a write in
// doubt, the binary searches of time lookups and retention, and trimming.

// cutLua removes what a write in doubt left: every entry at or above
// offset ARGV[1], which becomes the log's end again (with ARGV[2] and
// ARGV[3] its z and t). XADD takes only IDs above the last one the stream
// generated, removed or not, so that is set back to the last entry kept
// (XSETID), and the offsets can be written again. It runs when Redis is out
// of memory: it frees some.
const cutLua = `#!lua flags=allow-oom
local removed = 0
while true do
  local e = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', 256)
  if #e == 0 then break end
  local ids = {}
  for i, x in ipairs(e) do ids[i] = x[1] end
  removed = removed + redis.call('XDEL', KEYS[1], unpack(ids))
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('XSETID', KEYS[1], top[1][1], 'ENTRIESADDED', redis.call('XLEN', KEYS[1]), 'MAXDELETEDID', top[1][1])
end
redis.call('HSET', KEYS[2], 'end', ARGV[1], 'z', ARGV[2], 't', ARGV[3], 'v', '1')
return removed
`

// searchLua defines first(name, bound): by binary search over offsets,
// the base offset of the first entry whose field name ("t" or "z") is at
// least bound (a zero-padded number), or -1 when there is none. Both
// fields grow with the offset, so the entries that pass form a suffix of
// the stream, and a probe at an offset reads the entry holding it.
const searchLua = `
local function field(e, name)
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i+1] end
  end
  return ''
end
local function base(e) return tonumber(string.match(e[1], '^(%d+)')) end
local function first(name, bound)
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 or field(last[1], name) < bound then return -1 end
  local lo = base(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1])
  local hi = base(last[1])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('XREVRANGE', KEYS[1], string.format('%d', mid), '-', 'COUNT', 1)[1]
    if field(e, name) >= bound then hi = base(e) else lo = mid + 1 end
  end
  return hi
end
`

// seekScript returns first(ARGV[1], ARGV[2]) (OffsetForTime).
var seekScript = rueidis.NewLuaScript("#!lua flags=no-writes" + searchLua + `return first(ARGV[1], ARGV[2])`)

// trimScript applies retention: it removes the entries below offset
// ARGV[1], which the caller found (Log.Retain), but never the last entry.
// It runs when Redis is out of memory (allow-oom): trimming is how a full
// Redis gets room back. It returns the number of entries removed and the
// first entry's base offset and z after it, or {0, -1, ""} for an empty
// stream.
var trimScript = rueidis.NewLuaScript("#!lua flags=allow-oom" + searchLua + `
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return {0, -1, ''} end
local cut = tonumber(ARGV[1])
if cut > base(last[1]) then cut = base(last[1]) end
local removed = 0
if cut > 0 then
  removed = redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', cut))
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
return {removed, base(head), field(head, 'z')}
`)
