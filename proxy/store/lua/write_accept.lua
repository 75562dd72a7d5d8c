-- Accepting a write that changes a counter: the count change and the write's stream entry in
-- one step (appended to counter_core.lua), so a count never moves without its write nor a write
-- is accepted without its count. A write whose counter is not seeded yet is not accepted:
-- the caller seeds it from HubSpot and calls again.
--
-- KEYS[1..4] counter_op's keys   KEYS[5] the write's status hash   KEYS[6] the write stream
-- ARGV[1..9] counter_op's argv
-- ARGV[10]   status TTL, seconds
-- ARGV[11]   the counter change that undoes this one (JSON), kept while the write is unsent
-- ARGV[12]   the status hash's fields (JSON object)
-- ARGV[13]   the stream entry's fields (JSON array: name, value, ...)
--
-- Returns {status, count|false, capacity|false, entry id|false}: entry id false when the counter
-- answered anything but ok/unchanged (then nothing was written).

local counted = counter_op({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, ARGV)
local state = counted[1]
if state ~= 'ok' and state ~= 'unchanged' then
  return {state, counted[2], counted[3], false}
end
local status = KEYS[5]
for name, value in pairs(cjson.decode(ARGV[12])) do
  redis.call('HSET', status, name, value)
end
if state == 'ok' then
  -- 'unchanged': another write already counted this record; undoing is that write's business.
  redis.call('HSET', status, 'undo', ARGV[11])
end
redis.call('EXPIRE', status, tonumber(ARGV[10]))
local entry = redis.call('XADD', KEYS[6], '*', unpack(cjson.decode(ARGV[13])))
return {state, counted[2], counted[3], entry}
