-- Release a lease (proxy/store/lease.py) only if this owner still holds it (another may have taken
-- it over after expiry; deleting theirs would let a third holder in alongside it).
-- KEYS[1] lease key; ARGV[1] owner token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
