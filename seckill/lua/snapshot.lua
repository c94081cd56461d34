-- KEYS[1] event meta hash, KEYS[2] queued orders hash, KEYS[3] dead-lettered orders hash,
-- KEYS[4] set of returned order ids
-- ARGV[1] unused marker ("snapshot"), present so every call has the same shape
-- Returns {stock left, stock total, reservations ever, returned count, {queued order ids}, {dead order ids}},
-- or false if the event is not in Redis
-- Retry: safe (read-only).

-- One atomic read, so reconciliation compares PostgreSQL against a single moment of Redis.

local meta = redis.call('HMGET', KEYS[1], 'stock', 'total', 'reserved')
if not meta[1] then
  return false
end
return {
  tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3] or '0'), redis.call('SCARD', KEYS[4]),
  redis.call('HKEYS', KEYS[2]), redis.call('HKEYS', KEYS[3]),
}
