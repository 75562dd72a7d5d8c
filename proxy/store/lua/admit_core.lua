-- admit(max_ms, token, a0): reserve the earliest slot at which one call fits every bucket it
-- needs, all or nothing. Prepended to admit.lua (one call) and admit_many.lua (a lane's batch).
-- Python mirror: proxy/budget/model.py (BudgetModel.admit), where the proof of the rule is written.
--
-- KEYS: three per bucket, in order: data (window: sorted set of slots; daily: counter),
--       pause (string with a PX ttl), learned (hash {v, at}). All carry the {cred} hash tag.
-- Bucket i's four values are ARGV[a0 + 4 * (i - 1) + 1 .. 4]: kind ("window"|"daily"|"borrow"),
--       limit, window_ms, reset_ms (reset_ms: epoch ms of the next daily reset; 0 for window
--       buckets). "borrow": a window bucket (a pace) the call takes its own earliest slot of, or
--       the call's slot if later, without waiting for it: the slot obeys the rule below, so the
--       pace holds, and the next call that waits for the pace waits longer.
-- max_ms: how far ahead a slot may be reserved; token: the reservation's id in the logs.
-- Reply: {status, slot_ms, now_ms, bucket_index}; status 0 = reserved at slot_ms,
--        1 = not reserved, earliest slot is slot_ms (> now + max_ms),
--        2 = daily bucket full until slot_ms (its reset).
--
-- Slot rule per window bucket with limit N, window W (the log is ascending):
--   t >= last slot                      (monotone insertion), and
--   t >= (N-th most recent slot) + W    (when the log holds N or more).
-- Any window [x, x+W) containing t then holds at most N slots: t is the largest, so N+1 slots
-- would include the N most recent, the oldest of which is >= t - W + 1 > t - W, against rule 2.
-- Trimming slots <= now - W and removing reservations never add a slot to any window.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = #KEYS / 3

local function num(x)
  return string.format('%.0f', x)
end

local function effective_limit(key, limit, window)
  local got = redis.call('HMGET', key, 'v', 'at')
  if not got[1] then
    return limit
  end
  local windows = math.floor(math.max(0, now - tonumber(got[2])) / window)
  local step = math.max(1, math.ceil(limit / 10))
  return math.max(1, math.min(limit, tonumber(got[1]) + windows * step))
end

local function window_slot(key, limit, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now - window))
  local t = now
  local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if last[2] then
    t = math.max(t, tonumber(last[2]))
  end
  local nth = redis.call('ZREVRANGE', key, limit - 1, limit - 1, 'WITHSCORES')
  if nth[2] then
    t = math.max(t, tonumber(nth[2]) + window)
  end
  return t
end

local function daily_reset(key, reset)
  local pttl = redis.call('PTTL', key)
  if pttl > 0 then
    return now + pttl
  end
  return reset
end

local function admit(max_ms, token, a0)
  local t, binding = now, 1
  local borrowed = {}
  for i = 1, n do
    local a = a0 + (i - 1) * 4
    local kind, limit, window = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local data, pause, learned = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    local cand = now
    if kind == 'daily' then
      local used = tonumber(redis.call('GET', data) or '0')
      if used + 1 > limit then
        return {2, daily_reset(data, tonumber(ARGV[a + 4])), now, i}
      end
    else
      cand = window_slot(data, effective_limit(learned, limit, window), window)
    end
    local paused = redis.call('PTTL', pause)
    if paused > 0 then
      cand = math.max(cand, now + paused)
    end
    if kind == 'borrow' then
      borrowed[i] = cand
    elseif cand > t then
      t, binding = cand, i
    end
  end

  if t - now > max_ms then
    return {1, t, now, binding}
  end

  for i = 1, n do
    local a = a0 + (i - 1) * 4
    local kind, window, reset = ARGV[a + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local data = KEYS[3 * i - 2]
    if kind == 'daily' then
      redis.call('INCR', data)
      if reset <= now then
        reset = now + 86400000 -- a stale reset from the caller: never leave the counter immortal
      end
      redis.call('PEXPIREAT', data, num(reset))
    else
      local at = math.max(t, borrowed[i] or t)
      redis.call('ZADD', data, num(at), token)
      redis.call('PEXPIRE', data, num(at - now + window + 1000))
    end
  end
  return {0, t, now, binding}
end
