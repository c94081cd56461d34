-- KEYS[1] order stream, KEYS[2] queued orders hash, KEYS[3] dead-letter stream, KEYS[4] dead orders hash
-- ARGV[1] consumer group, ARGV[2] stream entry id, ARGV[3] reason, ARGV[4] deliveries so far
-- Returns the dead-letter entry id, or false if the entry is no longer pending (it was written meanwhile)
-- Retry: safe; a second call finds the entry no longer pending and answers false: the message is dead-lettered
-- once (the writer does not use the answer).

-- Moves the message in one step: it is in the order stream or in the dead-letter stream, never both or neither.
-- Pending is what counts, not being in the stream: acknowledged entries stay there until seckill_ack trims
-- below the oldest pending one.

if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return false
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return false
end
local fields = found[1][2]
local order_id, user = nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'o' then order_id = fields[i + 1] end
  if fields[i] == 'u' then user = fields[i + 1] end
end
table.insert(fields, 'src')
table.insert(fields, ARGV[2])
table.insert(fields, 'reason')
table.insert(fields, ARGV[3])
table.insert(fields, 'deliveries')
table.insert(fields, ARGV[4])
local dead_id = redis.call('XADD', KEYS[3], '*', unpack(fields))
if order_id then
  redis.call('HDEL', KEYS[2], order_id)
  redis.call('HSET', KEYS[4], order_id, user or '')
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return dead_id
