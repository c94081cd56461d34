-- KEYS[1] order stream, KEYS[2] queued orders hash
-- ARGV[1] consumer group; then pairs ARGV[2i] stream entry id, ARGV[1+2i] order id ("" if unreadable)
-- Returns the number of entries acknowledged

-- Called only after the PostgreSQL COMMIT. Only acknowledged entries are deleted from the stream, so an
-- unprocessed order is never trimmed.

local acked = 0
for i = 1, (#ARGV - 1) / 2 do
  local entry, order_id = ARGV[2 * i], ARGV[1 + 2 * i]
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
  if order_id ~= '' then
    redis.call('HDEL', KEYS[2], order_id)
  end
end
return acked
