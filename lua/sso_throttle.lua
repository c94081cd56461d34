-- KEYS[1] failed-login counter of the account (exists or not: the answer must not tell)
-- KEYS[2] failed-login counter of the client IP
-- ARGV[1] "attempt" (before checking a password) or "success" (after a correct one)
-- ARGV[2] failures allowed per account per window
-- ARGV[3] account window (s)
-- ARGV[4] failures allowed per client IP per day
-- Returns {0, 0} go on, {1, retry after (s)} the account is locked, {2, retry after (s)} the IP budget is spent

-- Every attempt is counted as a failure before the password is checked and a success gives it back, so
-- hundreds of simultaneous guesses cannot all slip in before the first failure is recorded.
if ARGV[1] == 'success' then
  redis.call('DEL', KEYS[1])
  if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
    redis.call('DECR', KEYS[2])
  end
  return {0, 0}
end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[2]) then
  return {1, redis.call('TTL', KEYS[1])}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[4]) then
  return {2, redis.call('TTL', KEYS[2])}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], 86400)
end
return {0, 0}
