package redislog

import "github.com/redis/rueidis"

// The Lua scripts run inside Redis, each atomically: no other command runs
// between their steps, and Redis writes a script's effects to its AOF as
// one MULTI/EXEC, so a restart finds all of a script's writes or none.
// The "#!lua" line makes Redis refuse a writing script before it starts
// when it is out of memory, rather than at its first write, so an append
// is all or nothing there too. Every check comes before the first write:
// a script that fails part way keeps the writes it made.
//
// A partition is two keys that share a hash tag (so that a Redis Cluster
// would keep them on one node): the stream KEYS[1], one entry per record
// batch, whose ID is "<base offset>-0" (written as "<base>-*", which
// Redis refuses unless base is above every ID it generated: the stream
// cannot go back by mistake; a cut sets that mark back with XSETID);
// and the hash KEYS[2] with the log's end offset ("end"), the bytes
// appended through it ("z") and the greatest timestamp appended ("t").
// Each entry has the batch ("b"), its greatest timestamp ("m"), the
// greatest timestamp of it and every batch appended before it ("t"), and
// the bytes appended before it ("z"); the numbers are zero-padded to 19 digits, so that comparing them as strings, in
// Lua, compares them as numbers (Lua's numbers are doubles, too narrow
// for nanosecond timestamps).

// appendScript appends batches if the log ends where the writer expects.
//
//	ARGV[1]  the end the writer expects: the first batch's base offset
//	ARGV[2]  "cut": entries at or above ARGV[1] may be removed first (a
//	         write in doubt left them); "gap": the log may end below
//	         ARGV[1] (Redis lost acknowledged batches; the writer goes on
//	         from its own end); "": neither
//	ARGV[3..5] the hash's new end, z and t
//	then per batch: base offset, batch, t, z, m
//
// It returns the number of entries removed by a cut, or an error
// "RATATOSKR END <end>" when the log does not end where expected, and
// "RATATOSKR WRONGTYPE <type>" when a key holds something else.
var appendScript = rueidis.NewLuaScript(`#!lua
local st = redis.call('TYPE', KEYS[1])['ok']
if st ~= 'stream' and st ~= 'none' then
  return redis.error_reply('RATATOSKR WRONGTYPE ' .. KEYS[1] .. ' ' .. st)
end
local ht = redis.call('TYPE', KEYS[2])['ok']
if ht ~= 'hash' and ht ~= 'none' then
  return redis.error_reply('RATATOSKR WRONGTYPE ' .. KEYS[2] .. ' ' .. ht)
end
local cur = tonumber(redis.call('HGET', KEYS[2], 'end') or '0')
local want = tonumber(ARGV[1])
local removed = 0
if cur ~= want then
  if cur > want and ARGV[2] == 'cut' then
    while true do
      local e = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', 256)
      if #e == 0 then break end
      local ids = {}
      for i, x in ipairs(e) do ids[i] = x[1] end
      removed = removed + redis.call('XDEL', KEYS[1], unpack(ids))
    end
    -- XADD takes only IDs above the last one generated, removed or not:
    -- set it back to the last entry kept, so the offsets can be reused.
    local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    if #top == 0 then
      redis.call('DEL', KEYS[1])
    else
      redis.call('XSETID', KEYS[1], top[1][1], 'ENTRIESADDED', redis.call('XLEN', KEYS[1]), 'MAXDELETEDID', top[1][1])
    end
  elseif not (cur < want and ARGV[2] == 'gap') then
    return redis.error_reply('RATATOSKR END ' .. cur)
  end
end
for i = 6, #ARGV, 5 do
  redis.call('XADD', KEYS[1], ARGV[i] .. '-*', 'b', ARGV[i+1], 't', ARGV[i+2], 'z', ARGV[i+3], 'm', ARGV[i+4])
end
redis.call('HSET', KEYS[2], 'end', ARGV[3], 'z', ARGV[4], 't', ARGV[5], 'v', '1')
return removed
`)

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
