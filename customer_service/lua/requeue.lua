-- Put a dead letter back on the inbox (ops, once its cause is fixed), in one step.
-- KEYS[1] dead-letter stream ({cs}:inbox:dead), KEYS[2] inbox stream ({cs}:inbox)
-- ARGV[1] dead letter id
-- Returns the new inbox entry id, or false when there is no such dead letter
-- Retry: safe; a repeated call finds no dead letter and changes nothing.

local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields, stored = {}, found[1][2]
for i = 1, #stored, 2 do
  if stored[i] ~= '_src' and stored[i] ~= '_reason' then
    table.insert(fields, stored[i])
    table.insert(fields, stored[i + 1])
  end
end
if #fields == 0 then
  -- Nothing to requeue: an entry without fields cannot be a message.
  return false
end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
