-- KEYS[1] dead-letter stream, KEYS[2] dead orders hash, KEYS[3] order stream, KEYS[4] queued orders hash
-- ARGV[1] dead-letter entry id
-- Returns the new order stream entry id, or false if there is no such dead letter
-- Retry: safe; a second call finds no such dead letter and answers false: the order is back on its stream once.

-- The reverse move of seckill_deadletter, in one step.

local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields, order_id, user = {}, nil, nil
local stored = found[1][2]
for i = 1, #stored, 2 do
  local name, value = stored[i], stored[i + 1]
  if name ~= 'src' and name ~= 'reason' and name ~= 'deliveries' then
    table.insert(fields, name)
    table.insert(fields, value)
  end
  if name == 'o' then order_id = value end
  if name == 'u' then user = value end
end
local new_id = redis.call('XADD', KEYS[3], '*', unpack(fields))
if order_id then
  redis.call('HDEL', KEYS[2], order_id)
  redis.call('HSET', KEYS[4], order_id, user or '')
end
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
