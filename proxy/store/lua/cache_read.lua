-- An object-cache read and the counters overlaid on a hit, in one round trip (appended to
-- counter_core.lua; see reads/object_cache.py for the entries, reads/counter_rules.py for the
-- overlay this does the Redis half of).
--
-- KEYS[1] the object's generation     KEYS[2] the cached entry {"g": generation, "b": body}
-- then counter_op's 4 keys per counter.
-- ARGV[1] the object id the URL names; then per counter 11 values: counter_op's 9 argv of a
-- read (seed and capacity '', filled here from the cached body), the count property, the
-- capacity property ('' none).
--
-- Returns {generation|false, entry|false, one reply per counter}. Counters are read only on a
-- fresh entry (its generation is the object's). A reply is counter_op's, or 'skip' (no count
-- to overlay: what the Python overlay skips), or 'other': a body this script does not read
-- exactly as the Python overlay would (another id, an unusual count); the caller then overlays
-- that object the ordinary way, so every answer is the one it would be.

local OTHER, SKIP = 'other', 'skip'

-- count_value of reads/counters.py for the values HubSpot sends ("12", "12.0", 12); nil for
-- a value it would read as no count; OTHER for anything this cannot read exactly as it does.
local function count_of(value)
  local kind = type(value)
  if value == nil or value == cjson.null or kind == 'boolean' or kind == 'table' then
    return nil
  end
  if kind == 'string' then
    if not (string.match(value, '^%d+$') or string.match(value, '^%d+%.0*$'))
        or #value > 15 then
      return OTHER
    end
    value = tonumber(value)
  elseif value < 0 then
    return nil
  elseif value ~= math.floor(value) or value >= 2 ^ 53 then
    return OTHER
  end
  return string.format('%d', value)
end

local function read_counter(object, url_id, keys, argv)
  local props = object.properties
  if type(props) ~= 'table' or next(props) == nil or #props > 0 then
    return OTHER -- an empty object and an empty list look alike here
  end
  if type(object.id) ~= 'string' or object.id ~= url_id then
    return OTHER
  end
  local seed, capacity = count_of(props[argv[10]]), count_of(props[argv[11]])
  if seed == OTHER or capacity == OTHER then
    return OTHER
  end
  local op = {argv[1], argv[2], seed or '', capacity or '', argv[5], argv[6], argv[7], argv[8],
              argv[9]}
  return counter_op(keys, op)
end

local generation = redis.call('GET', KEYS[1])
local entry = redis.call('GET', KEYS[2])
local reply = {generation, entry}
if not entry then
  return reply
end
local ok, decoded = pcall(cjson.decode, entry)
local current = (generation and generation ~= '') and generation or '0'
if not ok or type(decoded) ~= 'table' or decoded.g ~= current
    or type(decoded.b) ~= 'string' then
  return reply -- stale or unreadable: a miss, nothing overlaid
end
local parsed, object = pcall(cjson.decode, decoded.b)
local counters = (#KEYS - 2) / 4
for i = 1, counters do
  if not parsed or type(object) ~= 'table' then
    reply[#reply + 1] = SKIP
  else
    local keys = {KEYS[4 * i - 1], KEYS[4 * i], KEYS[4 * i + 1], KEYS[4 * i + 2]}
    local argv = {}
    for j = 1, 11 do
      argv[j] = ARGV[1 + 11 * (i - 1) + j]
    end
    reply[#reply + 1] = read_counter(object, ARGV[1], keys, argv)
  end
end
return reply
