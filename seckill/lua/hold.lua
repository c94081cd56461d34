-- KEYS[1] holds hash, KEYS[2] user -> held orders hash, KEYS[3] idempotency hash (of the user's home bucket)
-- ARGV[1] "confirm" (the stock was taken in another bucket) or "release" (no bucket took it), ARGV[2] order id
-- Returns 1 if this call resolved the hold, 0 if it was resolved before
-- Retry: safe; a second call finds the hold resolved and answers 0: the quota goes back once.

-- Idempotent: the hold is deleted by the first resolution, so a release applied twice (the buying process and
-- the sweeper) gives the user's quota back once.

local hold = redis.call('HGET', KEYS[1], ARGV[2])
if not hold then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[1] == 'release' then
  local user, key = string.match(hold, '^([^\n]*)\n([^\n]*)\n')
  local idem_field = user .. '\n' .. key
  if redis.call('HINCRBY', KEYS[2], user, -1) < 0 then
    redis.call('HSET', KEYS[2], user, 0)
  end
  if key ~= '' and redis.call('HGET', KEYS[3], idem_field) == ARGV[2] then
    redis.call('HDEL', KEYS[3], idem_field)
  end
end
return 1
