-- Exam booking counters (PRD 1C): every change to one counter, atomically.
--
-- KEYS[1] counter hash {count, capacity}
-- KEYS[2] SET of counted record ids (SADD/SREM decide: a record counts at most once)
-- KEYS[3] ZSET of pending reservations (member: reservation id, score: expiry, epoch ms)
-- KEYS[4] the counted record's -> counter link (string: the counter object's id)
-- ARGV[1] op: read | add | remove | reserve | release
-- ARGV[2] ttl ms, refreshed on every change
-- ARGV[3] seed count ('' none): set only when the count is unknown
-- ARGV[4] capacity ('' none)
-- ARGV[5] record id ('' none)       ARGV[6] counter object id (for the link)
-- ARGV[7] reservation id ('' none)  ARGV[8] reservation hold ms
-- ARGV[9] reserve only: a capacity for this call ('' none: the stored one), not stored
--
-- Returns {status, count|false, capacity|false}; status is ok | unchanged | unseeded | full |
-- nocapacity. Time is Redis's own (TIME), never a replica clock.

local hash, members, pending, link = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, ttl = ARGV[1], tonumber(ARGV[2])
local record, reservation = ARGV[5], ARGV[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changed = false

local function count()
  return tonumber(redis.call('HGET', hash, 'count'))
end

local function decrement()
  local c = count()
  if c ~= nil and c > 0 then
    redis.call('HSET', hash, 'count', c - 1)
  end
  changed = true
end

-- A reservation nobody confirmed (no booking linked) gives its seat back when it expires.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now)) do
  redis.call('ZREM', pending, id)
  decrement()
end

if ARGV[3] ~= '' and redis.call('HSETNX', hash, 'count', ARGV[3]) == 1 then
  changed = true
end
if ARGV[4] ~= '' and redis.call('HGET', hash, 'capacity') ~= ARGV[4] then
  redis.call('HSET', hash, 'capacity', ARGV[4])
  changed = true
end

local status = 'ok'
if op == 'read' then
  status = 'ok'
elseif op == 'remove' or (op == 'release' and record ~= '') then
  if redis.call('SREM', members, record) == 1 then
    decrement()
  else
    status = 'unchanged'
  end
elseif op == 'release' and reservation ~= '' then
  if redis.call('ZREM', pending, reservation) == 1 then
    decrement()
  else
    status = 'unchanged'
  end
elseif op == 'release' then
  redis.call('ZPOPMIN', pending)
  decrement()
elseif count() == nil then
  status = 'unseeded'
elseif op == 'add' then
  if redis.call('SADD', members, record) == 1 then
    -- A seat reserved ahead of the booking is now taken by it: no second increment.
    if redis.call('ZCARD', pending) > 0 then
      redis.call('ZPOPMIN', pending)
    else
      redis.call('HINCRBY', hash, 'count', 1)
    end
    redis.call('SET', link, ARGV[6], 'PX', ttl)
    changed = true
  else
    status = 'unchanged'
  end
elseif op == 'reserve' then
  local capacity = tonumber(ARGV[9]) or tonumber(redis.call('HGET', hash, 'capacity'))
  if record ~= '' and redis.call('SISMEMBER', members, record) == 1 then
    status = 'unchanged'
  elseif capacity == nil then
    status = 'nocapacity'
  elseif count() >= capacity then
    status = 'full'
  else
    redis.call('HINCRBY', hash, 'count', 1)
    if record ~= '' then
      redis.call('SADD', members, record)
      redis.call('SET', link, ARGV[6], 'PX', ttl)
    else
      redis.call('ZADD', pending, now + tonumber(ARGV[8]), reservation)
    end
    changed = true
  end
end

if changed then
  for _, k in ipairs({hash, members, pending}) do
    if redis.call('EXISTS', k) == 1 then
      redis.call('PEXPIRE', k, ttl)
    end
  end
end
return {status, redis.call('HGET', hash, 'count'), redis.call('HGET', hash, 'capacity')}
