-- KEYS[1] event meta hash, KEYS[2] order stream, KEYS[3] hash of applied change ids (seckill/outbox.py)
-- ARGV[1] consumer group, ARGV[2] sku, ARGV[3] title, ARGV[4] price (cents), ARGV[5] stock, ARGV[6] start ms,
-- ARGV[7] end ms, ARGV[8] per-user limit, ARGV[9] payment timeout s, ARGV[10] the event's number of stock buckets,
-- ARGV[11] this bucket's number (ARGV[5] is this bucket's share of the stock), ARGV[12] 1 if purchases need a
-- ticket, else 0, ARGV[13] admission spread ms, ARGV[14] the event's ticket secret (hex; "" for buckets > 0),
-- ARGV[15] the creation's change id
-- Returns 1 when the event was warmed, 0 when it already was or this change was applied here (nothing changed)
-- Retry: safe; a second call (the Redis client's retry, or the outbox finishing a creation a process left half
-- done) finds the change id or the warm event and answers 0.

-- Never overwrites a warm event: resetting stock during a sale would sell it twice, and a new secret would
-- void the tickets handed out.

if redis.call('HEXISTS', KEYS[3], ARGV[15]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'sku', ARGV[2], 'title', ARGV[3], 'price', ARGV[4], 'stock', ARGV[5],
  'total', ARGV[5], 'reserved', 0, 'start_ms', ARGV[6], 'end_ms', ARGV[7], 'limit', ARGV[8],
  'timeout_s', ARGV[9])
-- The node that wrote this state (its replication id): reserve.lua sells only on it (seckill/rederive.py).
redis.call('HSET', KEYS[1], 'gen', string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)'))
if tonumber(ARGV[10]) > 1 then
  redis.call('HSET', KEYS[1], 'buckets', ARGV[10], 'bucket', ARGV[11])
end
if ARGV[12] == '1' or ARGV[13] ~= '0' then
  redis.call('HSET', KEYS[1], 'ticket', ARGV[12], 'spread_ms', ARGV[13])
end
if ARGV[14] ~= '' then
  redis.call('HSET', KEYS[1], 'secret', ARGV[14])
end
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
if not ok and not string.find(tostring(err), 'BUSYGROUP') then
  return redis.error_reply(tostring(err))
end
redis.call('HSET', KEYS[3], ARGV[15], 1)
return 1
