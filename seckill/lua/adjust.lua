-- KEYS[1] event meta hash, KEYS[2] hash of applied change ids
-- ARGV[1] stock to add (0 for none), ARGV[2] new end ms ("" to keep), ARGV[3] stock-back channel, ARGV[4] event id,
-- ARGV[5] change id (seckill/outbox.py: one per recorded admin change)
-- Returns {stock left, stock total}, or false if the event is not in Redis
-- Publishes the event id on the stock-back channel when stock is added or the end moves (every process's
-- sold-out memory and event view cache hear it).
-- Retry: safe; a change id already applied here changes nothing and answers the stock as it is now (a retry of
-- a lost answer, or the outbox finishing a PATCH a process left half done, never adds the stock twice).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if redis.call('HSETNX', KEYS[2], ARGV[5], 1) == 1 then
  local add = tonumber(ARGV[1])
  if add > 0 then
    redis.call('HINCRBY', KEYS[1], 'total', add)
    redis.call('HINCRBY', KEYS[1], 'stock', add)
    redis.call('PUBLISH', ARGV[3], ARGV[4])
  end
  if ARGV[2] ~= '' then
    redis.call('HSET', KEYS[1], 'end_ms', ARGV[2])
    if add <= 0 then
      redis.call('PUBLISH', ARGV[3], ARGV[4])
    end
  end
end
return {tonumber(redis.call('HGET', KEYS[1], 'stock')), tonumber(redis.call('HGET', KEYS[1], 'total'))}
