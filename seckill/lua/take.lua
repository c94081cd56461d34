-- KEYS[1] event meta hash, KEYS[2] order stream, KEYS[3] queued orders hash, KEYS[4] set of held order ids
-- taken here, KEYS[5] set of held order ids voided here (all of ONE bucket of a bucketed event)
-- ARGV[1] order id (the hold's), ARGV[2] user id, ARGV[3] the user's seq (from the home bucket), ARGV[4] the home
-- bucket
-- Returns {"ok", order id, stock left} | {"replay", order id} | {"void"} | {"not_found"} | {"not_started"} |
-- {"ended"} | {"sold_out"} | {"repairing"} (this node did not write the bucket's state: see reserve.lua)
-- Retry: safe; a second call finds the order taken here and answers {"replay", order id}: the stock is taken
-- once (the caller reads a replay as taken).

-- Takes the stock of a purchase held in the user's home bucket (see seckill/buckets.py): the limit was checked
-- there. One hold yields at most one order: an order id taken here is answered as a replay, one voided here by
-- the hold sweeper is refused, and the stock decrement and the XADD happen together.

local meta, stream, queued, taken, voided = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local order_id, user, seq, home = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SISMEMBER', taken, order_id) == 1 then
  -- A write (of nothing) so that a WAIT after this call covers the first run's writes (durability "replica").
  if redis.call('EXISTS', meta) == 1 then
    redis.call('HINCRBY', meta, 'reserved', 0)
  end
  return {'replay', order_id}
end
if redis.call('SISMEMBER', voided, order_id) == 1 then
  return {'void'}
end
local conf = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'stock', 'reserved', 'buckets', 'bucket', 'gen')
if not conf[1] then
  return {'not_found'}
end
if conf[7] ~= string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') then
  return {'repairing'}
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms < tonumber(conf[1]) then
  return {'not_started'}
end
if now_ms >= tonumber(conf[2]) then
  return {'ended'}
end
local stock = tonumber(conf[3])
if stock <= 0 then
  return {'sold_out'}
end
local reserved = redis.call('HINCRBY', meta, 'reserved', 1)
redis.call('HSET', meta, 'stock', stock - 1)
local rsv = reserved * tonumber(conf[5]) + tonumber(conf[6])
redis.call('XADD', stream, '*', 'o', order_id, 'u', user, 'q', seq, 'r', rsv, 't', now_ms,
  'b', conf[6], 'h', home)
redis.call('HSET', queued, order_id, user)
redis.call('SADD', taken, order_id)
return {'ok', order_id, stock - 1}
