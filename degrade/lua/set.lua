-- Change one field of a subsystem's switch, publish the change and audit it, in one step.
-- KEYS[1] switches hash ({degrade}:switches), KEYS[2] audit stream, KEYS[3] pressure sorted set
-- ARGV[1] subsystem name; ARGV[2] field: "mode" (ops), "auto" (controller's state) or "tier"
-- ARGV[3] new value; ARGV[4] reason; ARGV[5] who; ARGV[6] source: "ops" or "controller"
-- ARGV[7] expected current value, "" for any (the controller's compare-and-set)
-- ARGV[8] step_ms: least time since the last automatic change (0 for ops)
-- ARGV[9] dwell_ms: least time since this switch last changed before a restore to "open" (0 for ops)
-- ARGV[10] quiet_ms: no restore while a process reported pressure this recently (0: no check)
-- ARGV[11] audit entries kept; ARGV[12] pub/sub channel; ARGV[13] the field's value when unset
-- Returns {status, old, new, since_ms}: status is "changed", "unchanged", "conflict" (expected value differs),
-- "too_soon" (step or dwell not over) or "pressure" (a process is still overloaded)
-- Retry: safe; a call that already ran finds the new value ("unchanged", or "conflict" for a compare-and-set)
-- and writes, audits and publishes nothing more.

local name, field, new = ARGV[1], ARGV[2], ARGV[3]
local key = field .. ':' .. name
local old = redis.call('HGET', KEYS[1], key) or ARGV[13]
local since = tonumber(redis.call('HGET', KEYS[1], 'since:' .. name) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if ARGV[7] ~= '' and old ~= ARGV[7] then
  return {'conflict', old, new, since}
end
if old == new then
  return {'unchanged', old, new, since}
end
if ARGV[6] == 'controller' then
  local last = tonumber(redis.call('HGET', KEYS[1], 'auto_last_ms') or '0')
  if now - last < tonumber(ARGV[8]) then
    return {'too_soon', old, new, since}
  end
  if new == 'open' then
    if now - since < tonumber(ARGV[9]) then
      return {'too_soon', old, new, since}
    end
    local quiet = tonumber(ARGV[10])
    if quiet > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - quiet)
      if redis.call('ZCARD', KEYS[3]) > 0 then
        return {'pressure', old, new, since}
      end
    end
  end
  redis.call('HSET', KEYS[1], 'auto_last_ms', now)
end

redis.call('HSET', KEYS[1], key, new, 'since:' .. name, now, 'reason:' .. name, ARGV[4],
  'by:' .. name, ARGV[5], 'source:' .. name, ARGV[6])
local entry = {name = name, field = field, old = old, new = new, reason = ARGV[4], by = ARGV[5],
  source = ARGV[6], at = now}
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[11], '*', 'name', name, 'field', field, 'old', old,
  'new', new, 'reason', ARGV[4], 'by', ARGV[5], 'source', ARGV[6], 'at', now)
redis.call('PUBLISH', ARGV[12], cjson.encode(entry))
return {'changed', old, new, now}
