-- Release a job lease only if this replica still holds it (another may have taken it over after
-- expiry; deleting theirs would let a third replica run the job concurrently).
-- KEYS[1] lease key; ARGV[1] owner token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
