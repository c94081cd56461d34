-- KEYS[1] event meta hash, KEYS[2] user -> held orders hash, KEYS[3] set of returned order ids
-- ARGV[1] stock-back channel, ARGV[2] event id; then pairs ARGV[1+2i] order id, ARGV[2+2i] user id
-- Returns the number of orders given back by this call (those already returned count 0), or -1 if the event
-- is not in Redis

-- Idempotent per order id: the returned set records every give-back, so a sweeper that crashed halfway or two
-- sweepers racing can apply the same list again without returning anything twice.

local meta, users, returned = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then
  return -1
end
local applied = 0
for i = 1, (#ARGV - 2) / 2 do
  local order_id, user = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  if redis.call('SADD', returned, order_id) == 1 then
    redis.call('HINCRBY', meta, 'stock', 1)
    if redis.call('HINCRBY', users, user, -1) < 0 then
      redis.call('HSET', users, user, 0)
    end
    applied = applied + 1
  end
end
if applied > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return applied
