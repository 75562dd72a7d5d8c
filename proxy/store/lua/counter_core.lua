-- Exam booking counters (PRD 1C): every change to one counter, as one function that scripts
-- include (`counter_ops` runs it alone; `write_accept` runs it with the write it belongs to).
--
-- counter_op(keys, argv):
-- keys[1] counter hash {count, capacity}
-- keys[2] SET of counted record ids (SADD/SREM decide: a record counts at most once)
-- keys[3] ZSET of pending reservations (member: reservation id, score: expiry, epoch ms)
-- keys[4] the counted record's -> counter link (string: the counter object's id)
-- argv[1] op: read | add | remove | reserve | release | confirm
-- argv[2] ttl ms, refreshed on every change
-- argv[3] seed count ('' none): set only when the count is unknown
-- argv[4] capacity ('' none)
-- argv[5] record id ('' none)       argv[6] counter object id (for the link)
-- argv[7] reservation id ('' none)  argv[8] reservation hold ms
-- argv[9] reserve only: a capacity for this call ('' none: the stored one), not stored
--
-- confirm: the reservation `argv[7]` becomes the record `argv[5]`'s seat (no count change); a
-- reservation already expired counts the record anew, as `add` would.
--
-- Returns {status, count|false, capacity|false}; status is ok | unchanged | unseeded | full |
-- nocapacity. Time is Redis's own (TIME), never a replica clock.

local function counter_op(keys, argv)
  local hash, members, pending, link = keys[1], keys[2], keys[3], keys[4]
  local op, ttl = argv[1], tonumber(argv[2])
  local record, reservation = argv[5], argv[7]
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

  if argv[3] ~= '' and redis.call('HSETNX', hash, 'count', argv[3]) == 1 then
    changed = true
  end
  if argv[4] ~= '' and redis.call('HGET', hash, 'capacity') ~= argv[4] then
    redis.call('HSET', hash, 'capacity', argv[4])
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
  elseif op == 'confirm' and redis.call('ZREM', pending, reservation) == 1 then
    redis.call('SADD', members, record)
    redis.call('SET', link, argv[6], 'PX', ttl)
    changed = true
  elseif count() == nil then
    status = 'unseeded'
  elseif op == 'add' or op == 'confirm' then
    if redis.call('SADD', members, record) == 1 then
      -- A seat reserved ahead of the booking is now taken by it: no second increment.
      if redis.call('ZCARD', pending) > 0 then
        redis.call('ZPOPMIN', pending)
      else
        redis.call('HINCRBY', hash, 'count', 1)
      end
      redis.call('SET', link, argv[6], 'PX', ttl)
      changed = true
    else
      status = 'unchanged'
    end
  elseif op == 'reserve' then
    local capacity = tonumber(argv[9]) or tonumber(redis.call('HGET', hash, 'capacity'))
    if record ~= '' and redis.call('SISMEMBER', members, record) == 1 then
      status = 'unchanged'
    elseif record == '' and reservation ~= '' and redis.call('ZSCORE', pending, reservation) then
      status = 'ok'  -- asked again after a lost reply: the reservation is held once
    elseif capacity == nil then
      status = 'nocapacity'
    elseif count() >= capacity then
      status = 'full'
    else
      redis.call('HINCRBY', hash, 'count', 1)
      if record ~= '' then
        redis.call('SADD', members, record)
        redis.call('SET', link, argv[6], 'PX', ttl)
      else
        redis.call('ZADD', pending, now + tonumber(argv[8]), reservation)
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
end
