-- KEYS[1] event meta hash
-- ARGV[1] stock to add (0 for none), ARGV[2] new end ms ("" to keep), ARGV[3] stock-back channel, ARGV[4] event id
-- Returns {stock left, stock total}, or false if the event is not in Redis

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local add = tonumber(ARGV[1])
if add > 0 then
  redis.call('HINCRBY', KEYS[1], 'total', add)
  redis.call('HINCRBY', KEYS[1], 'stock', add)
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'end_ms', ARGV[2])
end
return {tonumber(redis.call('HGET', KEYS[1], 'stock')), tonumber(redis.call('HGET', KEYS[1], 'total'))}
