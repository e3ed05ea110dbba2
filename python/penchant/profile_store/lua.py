"""The Lua scripts of the Redis store. Each touches the keys of one user only (passed in KEYS,
all under one hash tag), so each runs atomically on a single Redis and on a Redis Cluster.

KEYS, in every script:

1. profile, a hash: ``version``, ``landmark``, ``updated_at``, ``event_count``, ``doc`` (the
   MessagePack rest of the profile), ``priors`` (the features with an explicit like or
   dislike, ``␟``-separated: an event touching one makes its preference change), and ``snap``,
   the whole profile in one string (``ProfileSerializer.encode_snapshot``), current while
   ``snap_version`` equals ``version``;
2. interests, a hash: ``feature␟channel`` → forward-decayed sum, ``feature␟#`` → count,
   ``feature␟@`` → last update (epoch seconds);
3. history, a sorted set whose members sort by bytes (all scores 0): an 8-byte sort key of the
   event's time, the event id, ``␟``, then the MessagePack interaction. Byte order is the order
   ``InterestModel`` keeps (time, then event id), whatever order events arrive in;
4. events, a sorted set of applied event ids scored by event time: the idempotency window of a
   Redis-only store;
5. floor, a string that lives ``FLOOR_SECONDS`` after ``FOLLOW`` found Redis behind SQL and
   removed Redis's copy: a version below which no fill lands, and at or below which no
   ``FOLLOW`` runs (a reader that read SQL before that change must not put what it read into
   Redis). Deleting a user
   removes it; a ``FOLLOW`` that lands after a deletion may leave one, which then blocks fills
   of a user created anew for that long (reads go to SQL meanwhile).

Sums are added in Lua's doubles and written with ``%.17g`` (which reads back exactly): a batch's
amounts for one field are summed in event order and then added to the stored sum, the very
additions ``InterestModel.apply`` makes, so the sums equal the in-memory model's bit for bit.
(``HINCRBYFLOAT`` formats with ``%.17Lf``, which keeps only 17 digits after the point: small
forward-decayed sums would lose their precision.)

A read takes the snapshot while it is current, with no script: one ``HMGET`` of ``version``,
``snap_version`` and ``snap`` (atomic by itself; the snapshot holds the landmark, ``updated_at``
and event count it was made with, which only change with the version), then a ``PEXPIRE`` of each key to slide its
expiry, unless the same store slid them less than a quarter of their shortest TTL ago (a script
costs Redis several times these commands: measured with ``INFO commandstats``, ``EVALSHA`` of
the read script ~65 µs against ~4.5 µs for the ``HMGET`` and ~2.4 µs per ``PEXPIRE``, under
load). ``PEXPIRE`` never creates a key; a read of a profile that
has expired may slide the expiry of its leftover history and event keys, which still expire
once such reads stop. When the snapshot is stale (or its reader cannot decode it, or it is of
an earlier form), ``READ`` sends the parts. Moving a hash of 70 fields and 50 history members through Lua tables costs
Redis three times as much as copying out one string, hence the snapshot. The parts come as
``version, landmark, updated_at, event_count, doc, interests, history``, the interests hash as
one string (fields and values joined by ``␞``) and the history as the array of its members
(``table.concat`` of 500 members cost Redis ~0.43 ms more than sending the array, measured with
``INFO commandstats``); the reader then stores a new snapshot (``SNAPSHOT``) if the profile is still at that version.
Changes leave the snapshot stale by moving the version past it, so they cost nothing extra.

TTL arguments are milliseconds, 0 for none. An invalidation channel of "" publishes nothing;
otherwise the message is ``version␟user_id`` (``-␟user_id`` for a deletion, and for a forced
write, which replaces what Redis held at the same version): listeners drop copies older than
that version (any copy, for ``-``).
"""

from __future__ import annotations

__all__ = ["APPLY", "DELETE", "FLOOR_SECONDS", "FOLLOW", "PREFERENCES", "READ", "SNAPSHOT", "TOUCH", "WRITE"]

FLOOR_SECONDS = 10
"""How long a user's floor (``FOLLOW``) refuses fills of older versions: far longer than a
read of SQL and its fill take."""

_COMMON = """
local function touch(ttl_profile, ttl_history, ttl_events)
  if ttl_profile > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl_profile)
    redis.call('PEXPIRE', KEYS[2], ttl_profile)
  end
  if ttl_history > 0 then redis.call('PEXPIRE', KEYS[3], ttl_history) end
  if ttl_events > 0 then redis.call('PEXPIRE', KEYS[4], ttl_events) end
end
-- HMGET and HSET of any number of fields, in chunks that Lua's stack can unpack.
local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #part do out[i + j - 1] = part[j] end
  end
  return out
end
local function hset(key, pairs_, first, last)
  first, last = first or 1, last or #pairs_
  for i = first, last, 1000 do redis.call('HSET', key, unpack(pairs_, i, math.min(i + 999, last))) end
end
-- Keeps the newest max_history members of the history (its members sort by time).
local function trim_history(max_history)
  if max_history > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -max_history - 1)
  else
    redis.call('DEL', KEYS[3])
  end
end
local function state()
  local meta = redis.call('HMGET', KEYS[1], 'version', 'landmark', 'updated_at', 'event_count', 'doc')
  return {meta[1], meta[2], meta[3], meta[4], meta[5],
          table.concat(redis.call('HGETALL', KEYS[2]), '\\30'),
          redis.call('ZRANGE', KEYS[3], 0, -1)}
end
"""

READ = (
    _COMMON
    + """
-- ARGV: ttl_profile, ttl_history, ttl_events, 'parts' to be sent the parts even when the
--       snapshot is current (the reader could not decode it)
-- Answers {'snap', version, landmark, updated_at, event_count, snapshot} or {'parts', state}.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
touch(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
local meta = redis.call('HMGET', KEYS[1], 'version', 'landmark', 'updated_at', 'event_count', 'snap_version', 'snap')
if ARGV[4] ~= 'parts' and meta[5] == meta[1] and meta[6] then
  return {'snap', meta[1], meta[2], meta[3], meta[4], meta[6]}
end
return {'parts', state()}
"""
)

TOUCH = (
    _COMMON
    + """
-- ARGV: ttl_profile, ttl_history, ttl_events
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
touch(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
"""
)

APPLY = (
    _COMMON
    + """
-- Applies events to a Redis-only profile, skipping event ids applied before.
-- ARGV: 1 landmark the caller believes is stored ('' for no profile): else 'retry'
--       2 landmark the amounts are computed against (the stored one, or where it moves)
--       3 doc: for a profile created here  4 priors to store with that doc
--       5 updated_at  6 max_history  7 max_event_ids  8-10 ttl profile/history/events
--       11 channel  12 user_id
--       13 'profile': return the state; otherwise only when preferences must be refreshed
--       14 refresh_every (0: never)
--       15 '1' if leaving out events applied before could move the landmark: then, when some
--          were, answer 'replan' with the mask of new events, changing nothing
--       16 number of events; then per event: event_id, time, history member ('' for none),
--          number of features, then per feature: name, channel key, amount
-- Answers {'ok', number of new events, version, mask of new events ('1'/'0' per event),
--          state or false}.
local exists = redis.call('EXISTS', KEYS[1]) == 1
local landmark, version = '', 0
if exists then
  local meta = redis.call('HMGET', KEYS[1], 'landmark', 'version')
  landmark, version = meta[1], tonumber(meta[2])
end
if landmark ~= ARGV[1] then return {'retry', landmark} end
local n = tonumber(ARGV[16])
local starts, new, mask, fresh = {}, {}, {}, 0
local i = 17
for e = 1, n do
  starts[e] = i
  new[e] = not redis.call('ZSCORE', KEYS[4], ARGV[i])
  if new[e] then fresh = fresh + 1; mask[e] = '1' else mask[e] = '0' end
  i = i + 4 + 3 * tonumber(ARGV[i + 3])
end
mask = table.concat(mask)
if fresh < n and fresh > 0 and ARGV[15] == '1' then return {'replan', mask} end
local ttl_profile, ttl_history, ttl_events = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if fresh == 0 then
  local result = {'ok', 0, version, mask, false}
  if exists then
    touch(ttl_profile, ttl_history, ttl_events)
    if ARGV[13] == 'profile' then result[5] = state() end
  end
  return result
end
local prior_list
if not exists then
  redis.call('DEL', KEYS[2], KEYS[3])  -- leftovers of an expired profile
  redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'priors', ARGV[4])
  prior_list = ARGV[4]
else
  prior_list = redis.call('HGET', KEYS[1], 'priors')
  if landmark ~= ARGV[2] then
    -- Move the landmark: every sum of half-life h is multiplied by 2^(-(new - old)/h), so no
    -- current value changes (InterestModel.rebase, done atomically here).
    local shift = tonumber(ARGV[2]) - tonumber(landmark)
    local flat = redis.call('HGETALL', KEYS[2])
    for f = 1, #flat, 2 do
      local field = flat[f]
      local at = string.find(field, '\\31[^\\31]*$')
      local part = string.sub(field, at + 1)
      local sign = string.sub(part, 1, 1)
      if sign == '+' or sign == '-' then
        local value = tonumber(flat[f + 1]) * 2 ^ (-shift / tonumber(string.sub(part, 2)))
        redis.call('HSET', KEYS[2], field, string.format('%.17g', value))
      end
    end
  end
end
local priors = {}
if prior_list then for name in string.gmatch(prior_list, '[^\\31]+') do priors[name] = true end end
local sums, fields, counts, latest, names = {}, {}, {}, {}, {}
local touched_prior = false
for e = 1, n do
  if new[e] then
    local j = starts[e]
    local event_id, at, member, features = ARGV[j], ARGV[j + 1], ARGV[j + 2], tonumber(ARGV[j + 3])
    local when = tonumber(at)
    j = j + 4
    for _ = 1, features do
      local name, amount = ARGV[j], tonumber(ARGV[j + 2])
      local field = name .. '\\31' .. ARGV[j + 1]
      j = j + 3
      if sums[field] == nil then sums[field] = 0; fields[#fields + 1] = field end
      sums[field] = sums[field] + amount
      if counts[name] == nil then counts[name] = 0; latest[name] = at; names[#names + 1] = name end
      counts[name] = counts[name] + 1
      if when > tonumber(latest[name]) then latest[name] = at end
      if priors[name] then touched_prior = true end
    end
    if member ~= '' then redis.call('ZADD', KEYS[3], 0, member) end
    redis.call('ZADD', KEYS[4], at, event_id)
  end
end
-- Every field this batch changes is read with one HMGET and written with one HSET.
local wanted = {}
for _, field in ipairs(fields) do wanted[#wanted + 1] = field end
for _, name in ipairs(names) do
  wanted[#wanted + 1] = name .. '\\31#'
  wanted[#wanted + 1] = name .. '\\31@'
end
local stored = hmget(KEYS[2], wanted)
local writes = {}
for f, field in ipairs(fields) do
  local total = sums[field]
  if stored[f] then total = tonumber(stored[f]) + total end
  writes[#writes + 1] = field
  writes[#writes + 1] = string.format('%.17g', total)
end
for m, name in ipairs(names) do
  local at = #fields + 2 * m - 1
  writes[#writes + 1] = wanted[at]
  writes[#writes + 1] = string.format('%d', (tonumber(stored[at]) or 0) + counts[name])
  if (not stored[at + 1]) or tonumber(stored[at + 1]) < tonumber(latest[name]) then
    writes[#writes + 1] = wanted[at + 1]
    writes[#writes + 1] = latest[name]
  end
end
hset(KEYS[2], writes)
trim_history(tonumber(ARGV[6]))
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[7]) - 1)
redis.call('HSET', KEYS[1], 'landmark', ARGV[2], 'updated_at', ARGV[5])
version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local event_count = redis.call('HINCRBY', KEYS[1], 'event_count', fresh)
touch(ttl_profile, ttl_history, ttl_events)
if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], version .. '\\31' .. ARGV[12]) end
local k = tonumber(ARGV[14])
local crossed = k > 0 and math.floor(event_count / k) ~= math.floor((event_count - fresh) / k)
local result = {'ok', fresh, version, mask, false}
if ARGV[13] == 'profile' or crossed or touched_prior then result[5] = state() end
return result
"""
)

FOLLOW = (
    _COMMON
    + """
-- Brings Redis from the version an SQL store changed to the version it wrote, by setting what
-- the change changed: the profile's fields, the interest fields of the features its events
-- touched (all of them when the landmark moved), the history entries it added.
-- ARGV: 1 the version Redis must hold (0: none), else (or if the user's floor, KEYS[5], is at
--         the new version or above) it answers 'stale' and, if what it holds is older than the
--         new version, removes it (readers fall back to SQL), raises the floor to the new
--         version (a fill of an older one, made from SQL before this change, must not land)
--         and announces the new version, so that no reader takes the old copy for current
--       2 the new version  3 doc  4 priors  5 landmark  6 updated_at  7 event_count
--       8 max_history  9-11 ttl profile/history/events  12 channel  13 user_id
--       14 '1' if the interest fields given are all of them (the others are removed)
--       15 number of interest field/value arguments, then those, then the history members to add
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local new = tonumber(ARGV[2])
local floor = tonumber(redis.call('GET', KEYS[5]) or '0')
if current ~= tonumber(ARGV[1]) or floor >= new then
  if current < new then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    if floor < new then redis.call('SET', KEYS[5], new, 'PX', FLOOR_MS) end
    if ARGV[12] ~= '' then redis.call('PUBLISH', ARGV[12], ARGV[2] .. '\\31' .. ARGV[13]) end
  end
  return {'stale', current}
end
if current == 0 then redis.call('DEL', KEYS[2], KEYS[3]) elseif ARGV[14] == '1' then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3], 'priors', ARGV[4], 'landmark', ARGV[5],
           'updated_at', ARGV[6], 'event_count', ARGV[7])
local last = 15 + tonumber(ARGV[15])
if last > 15 then hset(KEYS[2], ARGV, 16, last) end
local members = {}
for i = last + 1, #ARGV do
  members[#members + 1] = 0
  members[#members + 1] = ARGV[i]
end
for i = 1, #members, 1000 do redis.call('ZADD', KEYS[3], unpack(members, i, math.min(i + 999, #members))) end
trim_history(tonumber(ARGV[8]))
touch(tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]))
if ARGV[12] ~= '' then redis.call('PUBLISH', ARGV[12], ARGV[2] .. '\\31' .. ARGV[13]) end
return {'ok', ARGV[2]}
"""
).replace("FLOOR_MS", str(FLOOR_SECONDS * 1000))

SNAPSHOT = """
-- Stores the snapshot of a profile if it is still at the version it was made from.
-- ARGV: version, snapshot
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'snap', ARGV[2], 'snap_version', ARGV[1])
return 1
"""

PREFERENCES = """
-- Stores a profile's refreshed preferences (its doc) if it is still at the version they were
-- computed for. ARGV: version, doc, channel, user_id
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2])
redis.call('HDEL', KEYS[1], 'snap_version')
-- Listeners drop copies older than the version announced: announcing the next one drops the
-- copies of this version read before its preferences were refreshed.
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], (tonumber(ARGV[1]) + 1) .. '\\31' .. ARGV[4]) end
return 1
"""

WRITE = (
    _COMMON
    + """
-- ARGV: 1 mode ('put': next version, if ARGV[2] is '' or the stored version;
--         'fill': version ARGV[2], unless Redis holds that version or a newer one, or the
--                 user's floor (KEYS[5], see FOLLOW) is above it;
--         'force': version ARGV[2] whatever Redis holds)
--       2 version  3 doc  4 landmark  5 updated_at  6 event_count  7 priors
--       8-10 ttl profile/history/events  11 channel  12 user_id  13 snapshot
--       14 number of interest field/value arguments, then the interest fields and values,
--       then the history members
local mode = ARGV[1]
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version
if mode == 'put' then
  if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return {'conflict', current} end
  version = current + 1
else
  version = tonumber(ARGV[2])
  if mode == 'fill' and (current >= version or tonumber(redis.call('GET', KEYS[5]) or '0') > version) then
    return {'skip', current}
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'landmark', ARGV[4], 'updated_at', ARGV[5], 'version', version,
           'event_count', ARGV[6], 'priors', ARGV[7], 'snap', ARGV[13], 'snap_version', version)
local fields = tonumber(ARGV[14])
for i = 15, 14 + fields, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 15 + fields, #ARGV do redis.call('ZADD', KEYS[3], 0, ARGV[i]) end
touch(tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]))
-- A forced write (rebuild) replaces what Redis held at the same version: every copy must go.
if ARGV[11] ~= '' then
  redis.call('PUBLISH', ARGV[11], (mode == 'force' and '-' or version) .. '\\31' .. ARGV[12])
end
return {'ok', version}
"""
)

DELETE = """
-- ARGV: channel, user_id
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], '-\\31' .. ARGV[2]) end
return existed
"""
