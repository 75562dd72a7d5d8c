-- Calls admitted in process while Redis was away (the limiter's fallback), added to a bucket's
-- window log as slots at the times they were made: the shared window then counts them as it
-- counts its own, where a pause until the last of them left its window had stopped the bucket
-- for every replica for up to a whole window (10 s of no general call after a 2 s stall).
--
-- KEYS[1]: the window's sorted set (admit_core's data key).
-- ARGV[1]: window ms; ARGV[2]: an id for this hand-back (slot members are ARGV[2]:i);
-- ARGV[3..]: each call's age in ms (how long before now it was admitted).
-- Reply: how many slots were added.
--
-- Slots in the past keep admit_core's rule sound: a later slot t is placed after the N-th most
-- recent slot (by score) plus the window, so (t - W, t] still holds at most N slots. Windows
-- that the calls made here overfilled lie in the past; nothing can be done about them now.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[1])
local added = 0
for i = 3, #ARGV do
  local at = now - tonumber(ARGV[i])
  if at > now - window then
    redis.call('ZADD', KEYS[1], string.format('%.0f', at), ARGV[2] .. ':' .. (i - 2))
    added = added + 1
  end
end
if added > 0 and redis.call('PTTL', KEYS[1]) < window + 1000 then
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
return added
