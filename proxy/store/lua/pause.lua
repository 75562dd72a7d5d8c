-- Pause a bucket for every replica (upstream 429). Only ever extends a pause.
-- KEYS[1]: pause key. ARGV[1]: pause length in ms. Reply: the pause left, in ms.
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < ms then
  redis.call('SET', KEYS[1], '1', 'PX', string.format('%.0f', ms))
  return ms
end
return left
