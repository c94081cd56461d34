-- KEYS[1] registrations from the client network in the current hour
-- ARGV[1] registrations allowed per network per window, ARGV[2] the window (s)
-- Returns {0, 0} go on (counted), {1, retry after (s)} the network has registered enough for now
-- Retry: a retried call counts twice (errs on the side of refusing); nothing else changes.

-- Every registration that reaches the password hash counts, taken names included: 409 `username_taken` tells
-- whether a name exists, so this also bounds how fast one network can probe for names.
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  return {1, ttl > 0 and ttl or tonumber(ARGV[2])}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {0, 0}
