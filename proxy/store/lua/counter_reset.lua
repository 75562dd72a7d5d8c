-- Reconciliation: make a counter agree with the bookings HubSpot says are active.
-- KEYS[1] counter hash {count, capacity, synced}; KEYS[2] SET of counted booking ids;
-- KEYS[3] ZSET of pending reservations (score: expiry ms)
-- ARGV[1] ttl ms; ARGV[2..] the active booking ids
-- The count is the active bookings plus the seats reserved and not yet booked. Returns the old
-- count (false when unknown) and the new one.
local hash, members, pending = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', pending, '-inf', now)
local old = tonumber(redis.call('HGET', hash, 'count'))
redis.call('DEL', members)
for i = 2, #ARGV do
  redis.call('SADD', members, ARGV[i])
end
local new = (#ARGV - 1) + redis.call('ZCARD', pending)
redis.call('HSET', hash, 'count', new)
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('PEXPIRE', key, ttl)
  end
end
return {old or false, new}
