-- KEYS[1] event meta hash
-- ARGV[1] unused marker ("view"), present so every call has the same shape
-- Returns {server time ms, field, value, field, value, ...} (the meta hash flattened), or false if missing

local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return false
end
local t = redis.call('TIME')
table.insert(fields, 1, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return fields
