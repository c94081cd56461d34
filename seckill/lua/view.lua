-- KEYS[1] event meta hash (bucket 0)
-- ARGV[1] unused marker ("view"), present so every call has the same shape
-- Returns {server time ms, field, value, field, value, ...} (the meta hash flattened), or false if missing.
-- The ticket secret (field "secret") is left out until the Redis clock has reached the event's start: before
-- that no process, so no client, can know it.
-- Retry: safe (read-only).

local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return false
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start_ms = tonumber(redis.call('HGET', KEYS[1], 'start_ms'))
local shown = {string.format('%d', now_ms)}
for i = 1, #fields, 2 do
  if fields[i] ~= 'secret' or now_ms >= start_ms then
    shown[#shown + 1] = fields[i]
    shown[#shown + 1] = fields[i + 1]
  end
end
return shown
