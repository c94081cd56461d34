-- KEYS[1] failed-login counter of the account (exists or not: the answer must not tell)
-- KEYS[2] failed-login counter of the client IP
-- ARGV[1] "attempt" (before checking a password), "failure" (it was wrong) or "success" (it was right)
-- ARGV[2] failures allowed per account per window
-- ARGV[3] account window (s)
-- ARGV[4] failures allowed per client IP per day
-- Returns {0, 0} go on, {1, retry after (s)} the account is locked, {2, retry after (s)} the IP budget is spent
-- Not idempotent: an "attempt" or "failure" run twice counts twice (errs on the side of locking).

-- An attempt counts against its account before the password is checked and a success gives it back, so
-- hundreds of simultaneous guesses at one account cannot all slip in before the first failure is recorded.
-- The IP budget counts real failures only: many people behind one address may log in at the same moment.
if ARGV[1] == 'success' then
  redis.call('DEL', KEYS[1])
  return {0, 0}
end
if ARGV[1] == 'failure' then
  if redis.call('INCR', KEYS[2]) == 1 then
    redis.call('EXPIRE', KEYS[2], 86400)
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
return {0, 0}
