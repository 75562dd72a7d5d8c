-- The admissions of k calls of one lane (the same buckets, hence the same KEYS and bucket
-- values), in order, in one script: exactly what k admit.lua calls in a row would reserve, at
-- one Redis time (admit_core.lua is prepended). It saves the client packing, sending and
-- parsing k commands when a lane's asks leave together (budget/asks.py).
-- KEYS: three per bucket, as admit_core.lua says.
-- ARGV: k, then four per bucket (kind, limit, window_ms, reset_ms), then max_ms and token of
--       each call.
-- Reply: one string, the four numbers of each call's admit() reply, in order, joined by commas
--        (one bulk reply: the client reads 4 * k nested integers much more slowly).
local k = tonumber(ARGV[1])
local base = 1 + 4 * n
local parts = {}
for j = 1, k do
  local reply = admit(tonumber(ARGV[base + 2 * j - 1]), ARGV[base + 2 * j], 1)
  for _, x in ipairs(reply) do
    parts[#parts + 1] = num(x)
  end
end
return table.concat(parts, ',')
