-- Shrink a window bucket's limit when HubSpot's headers show others spending the same budget.
-- Python mirror: proxy/budget/model.py (learned_target, recovered_limit, BudgetModel.learn).
-- KEYS[1]: the bucket's slot log (sorted set); KEYS[2]: learned hash {v, at}.
-- ARGV: limit, upstream_max, upstream_remaining, window_ms, ttl_windows.
-- Reply: the effective limit now in force.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local limit, umax, remaining = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, ttl_windows = tonumber(ARGV[4]), tonumber(ARGV[5])

local function num(x)
  return string.format('%.0f', x)
end

local current = limit
local got = redis.call('HMGET', KEYS[2], 'v', 'at')
if got[1] then
  local windows = math.floor(math.max(0, now - tonumber(got[2])) / window)
  local step = math.max(1, math.ceil(limit / 10))
  current = math.max(1, math.min(limit, tonumber(got[1]) + windows * step))
end

if umax <= 0 then
  return current
end
-- our own calls HubSpot has (likely) counted: slots in (now - window, now]
local own = redis.call('ZCOUNT', KEYS[1], '(' .. num(now - window), num(now))
local others = (umax - remaining) - own
if others <= 0 then
  return current
end
local target = math.max(1, math.min(limit, math.floor(limit * math.max(0, umax - others) / umax)))
if target < current then
  redis.call('HSET', KEYS[2], 'v', num(target), 'at', num(now))
  redis.call('PEXPIRE', KEYS[2], num(window * ttl_windows))
  return target
end
return current
