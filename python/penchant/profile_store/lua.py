"""The Lua scripts of the Redis store. Each touches the keys of one user only (passed in KEYS,
all under one hash tag), so each runs atomically on a single Redis and on a Redis Cluster.

KEYS, in every script: 1 profile (hash: version, landmark, updated_at, doc), 2 interests (hash:
``feature␟channel`` → forward-decayed sum, ``feature␟#`` → count, ``feature␟@`` → last update),
3 history (list of MessagePack interactions, oldest first), 4 events (sorted set of applied
event ids, scored by event time: the idempotency window of a Redis-only store).

TTL arguments are milliseconds, 0 for none. An invalidation channel of "" publishes nothing;
otherwise the message is ``version␟user_id`` (``-␟user_id`` for a deletion).
"""

from __future__ import annotations

__all__ = ["APPLY", "DELETE", "READ", "TOUCH", "WRITE"]

_TOUCH_FUNCTION = """
local function touch(ttl_profile, ttl_history, ttl_events)
  if ttl_profile > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl_profile)
    redis.call('PEXPIRE', KEYS[2], ttl_profile)
  end
  if ttl_history > 0 then redis.call('PEXPIRE', KEYS[3], ttl_history) end
  if ttl_events > 0 then redis.call('PEXPIRE', KEYS[4], ttl_events) end
end
local function state()
  local meta = redis.call('HMGET', KEYS[1], 'version', 'landmark', 'updated_at', 'doc')
  return {meta[1], meta[2], meta[3], meta[4], redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[3], 0, -1)}
end
"""

READ = (
    _TOUCH_FUNCTION
    + """
-- ARGV: ttl_profile, ttl_history, ttl_events
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
touch(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return state()
"""
)

TOUCH = (
    _TOUCH_FUNCTION
    + """
-- ARGV: ttl_profile, ttl_history, ttl_events
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
touch(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
"""
)

APPLY = (
    _TOUCH_FUNCTION
    + """
-- ARGV: 1 mode ('dedup': skip event ids seen before, the caller's landmark must match;
--         'guarded': the caller saw version ARGV[2] and landmark ARGV[3], else 'stale')
--       2 expected (dedup: landmark or '' for no profile; guarded: version)
--       3 landmark the increments are computed against
--       4 doc (dedup: for a new profile; guarded: replaces the stored one)
--       5 updated_at  6 max_history  7 max_event_ids  8-10 ttl profile/history/events
--       11 channel  12 user_id  13 'profile' to return the state, else only the version
--       14 number of events; then per event: event_id, time, history entry ('' for none),
--          number of features, and per feature: name, count, last update, number of channels,
--          then channel key and amount per channel
local mode = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
local landmark = ''
if exists then landmark = redis.call('HGET', KEYS[1], 'landmark') end
local new_landmark = ARGV[3]
if mode == 'dedup' then
  if landmark ~= ARGV[2] then return {'retry', landmark} end
else
  local version = '0'
  if exists then version = redis.call('HGET', KEYS[1], 'version') end
  if version ~= ARGV[2] or landmark ~= new_landmark then return {'stale'} end
end
if not exists then
  redis.call('DEL', KEYS[2], KEYS[3])  -- leftovers of an expired profile
elseif landmark ~= new_landmark then
  -- Move the landmark: every sum of half-life h is multiplied by 2^(-(new - old)/h), so no
  -- current value changes (InterestModel.rebase, done atomically here).
  local shift = tonumber(new_landmark) - tonumber(landmark)
  local flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    local field = flat[i]
    local at = string.find(field, '\\31[^\\31]*$')
    local part = string.sub(field, at + 1)
    local sign = string.sub(part, 1, 1)
    if sign == '+' or sign == '-' then
      local value = tonumber(flat[i + 1]) * 2 ^ (-shift / tonumber(string.sub(part, 2)))
      redis.call('HSET', KEYS[2], field, string.format('%.17g', value))
    end
  end
end
local fresh = 0
local i = 15
for _ = 1, tonumber(ARGV[14]) do
  local event_id, at, entry, features = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local apply = true
  if mode == 'dedup' then apply = redis.call('ZADD', KEYS[4], 'NX', at, event_id) == 1 end
  i = i + 4
  for _ = 1, features do
    local name, count, last, channels = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    i = i + 4
    if apply then
      local prefix = name .. '\\31'
      for c = 0, channels - 1 do
        redis.call('HINCRBYFLOAT', KEYS[2], prefix .. ARGV[i + 2 * c], ARGV[i + 2 * c + 1])
      end
      redis.call('HINCRBY', KEYS[2], prefix .. '#', count)
      local stored = redis.call('HGET', KEYS[2], prefix .. '@')
      if (not stored) or tonumber(stored) < tonumber(last) then redis.call('HSET', KEYS[2], prefix .. '@', last) end
    end
    i = i + 2 * channels
  end
  if apply then
    fresh = fresh + 1
    if entry ~= '' then redis.call('RPUSH', KEYS[3], entry) end
  end
end
local ttl_profile, ttl_history, ttl_events = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if fresh == 0 then
  if exists then touch(ttl_profile, ttl_history, ttl_events) end
  if ARGV[13] == 'profile' then
    if exists then return {'ok', 0, state()} end
    return {'ok', 0}
  end
  return {'ok', 0, tonumber(redis.call('HGET', KEYS[1], 'version') or '0')}
end
if not exists or mode == 'guarded' then redis.call('HSET', KEYS[1], 'doc', ARGV[4]) end
redis.call('HSET', KEYS[1], 'landmark', new_landmark, 'updated_at', ARGV[5])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local max_history = tonumber(ARGV[6])
if max_history > 0 then redis.call('LTRIM', KEYS[3], -max_history, -1) else redis.call('DEL', KEYS[3]) end
if mode == 'dedup' then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[7]) - 1) end
touch(ttl_profile, ttl_history, ttl_events)
if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], version .. '\\31' .. ARGV[12]) end
if ARGV[13] == 'profile' then return {'ok', fresh, state()} end
return {'ok', fresh, version}
"""
)

WRITE = (
    _TOUCH_FUNCTION
    + """
-- ARGV: 1 mode ('put': next version, if ARGV[2] is '' or the stored version;
--         'fill': version ARGV[2], unless Redis holds that version or a newer one;
--         'force': version ARGV[2] whatever Redis holds)
--       2 version  3 doc  4 landmark  5 updated_at  6-8 ttl profile/history/events
--       9 channel  10 user_id  11 number of interest field/value arguments
--       then the interest fields and values, then the history entries
local mode = ARGV[1]
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version
if mode == 'put' then
  if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return {'conflict', current} end
  version = current + 1
else
  version = tonumber(ARGV[2])
  if mode == 'fill' and current >= version then return {'skip', current} end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'landmark', ARGV[4], 'updated_at', ARGV[5], 'version', version)
local fields = tonumber(ARGV[11])
for i = 12, 11 + fields, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 12 + fields, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
touch(tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]))
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], version .. '\\31' .. ARGV[10]) end
return {'ok', version}
"""
)

DELETE = """
-- ARGV: channel, user_id
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], '-\\31' .. ARGV[2]) end
return existed
"""
