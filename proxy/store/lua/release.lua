-- Give back one reservation made by admit.lua (the caller was cancelled before its slot).
-- KEYS: the data keys of the buckets (window: sorted set; daily: counter).
-- ARGV: token, then one kind per key ("window"|"daily").
-- Removing a slot never adds one to any window, so the admission proof still holds.
local token = ARGV[1]
for i = 1, #KEYS do
  if ARGV[i + 1] == 'daily' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if used > 0 then
      redis.call('DECR', KEYS[i])
    end
  else
    redis.call('ZREM', KEYS[i], token)
  end
end
return 1
