-- Edit a degradation plan's record, never a switch: create or replace it, delete it, schedule or cancel its
-- application; audited and announced ({"plans_changed": true} on the channel) in one step.
-- KEYS[1] plans hash ({degrade}:plans), KEYS[2] schedule sorted set ({degrade}:schedule), KEYS[3] audit stream
-- ARGV[1] op: "put", "delete", "schedule" or "cancel"; ARGV[2] plan name; ARGV[3] who; ARGV[4] reason
-- ARGV[5] call id ("" for put and delete); ARGV[6] audit entries kept; ARGV[7] pub/sub channel
-- put: ARGV[8] most plans kept, ARGV[9] description, ARGV[10] changes "name=value,..." sorted by name
-- schedule: ARGV[8] at (ms, Redis clock), ARGV[9] the same as ISO text (for the audit), ARGV[10] force "1" or "0"
-- Returns {status, record JSON or ""}: status "changed", "unchanged" (put: the same description and changes),
-- "deleted", "scheduled", "cancelled", or a refusal: "unknown" (no such plan), "too_many" (put: the plan limit),
-- "past" (schedule: at is not after the Redis clock), "not_scheduled" (cancel)
-- Retry: safe. A put sent again finds the same plan ("unchanged", nothing written); a schedule or cancel with
-- the same call id answers what the first call did and writes nothing; a delete sent again finds no plan
-- ("unknown") and writes nothing.

local op, name, who, reason, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function none(v)
  return v == nil or v == cjson.null
end

local function audit(field, old, new)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'name', name, 'field', field, 'old', old,
    'new', new, 'reason', reason, 'by', who, 'source', 'ops', 'at', now)
  redis.call('PUBLISH', ARGV[7], cjson.encode({plans_changed = true, plan = name, at = now}))
end

local raw = redis.call('HGET', KEYS[1], name)
local rec = raw and cjson.decode(raw) or nil

if op == 'put' then
  local description, changes = ARGV[9], ARGV[10]
  local old = ''
  if rec then
    if rec.description == description and rec.changes == changes then
      return {'unchanged', raw}
    end
    old = rec.changes
  else
    if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[8]) then
      return {'too_many', ''}
    end
    rec = {name = name, scheduled = cjson.null, applied = cjson.null, rolled_back = cjson.null,
      last = cjson.null}
  end
  rec.description, rec.changes, rec.updated_ms, rec.updated_by = description, changes, now, who
  raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], name, raw)
  audit('plan_edit', old, changes)
  return {'changed', raw}
end

if not rec then
  return {'unknown', ''}
end
if id ~= '' and not none(rec.last) and rec.last.id == id then
  return {rec.last.status, raw}
end

if op == 'delete' then
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
  audit('plan_edit', rec.changes, '')
  return {'deleted', raw}
end

if op == 'schedule' then
  local at = tonumber(ARGV[8])
  if at <= now then
    return {'past', raw}
  end
  local old = ''
  if not none(rec.scheduled) then
    old = rec.changes .. ' at ' .. rec.scheduled.at
  end
  rec.scheduled = {at_ms = at, at = ARGV[9], by = who, reason = reason, force = ARGV[10] == '1', id = id}
  rec.last = {id = id, status = 'scheduled'}
  raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], name, raw)
  redis.call('ZADD', KEYS[2], at, name)
  audit('schedule', old, rec.changes .. ' at ' .. ARGV[9])
  return {'scheduled', raw}
end

if op == 'cancel' then
  if none(rec.scheduled) then
    return {'not_scheduled', raw}
  end
  local old = rec.changes .. ' at ' .. rec.scheduled.at
  rec.scheduled = cjson.null
  rec.last = {id = id, status = 'cancelled'}
  raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], name, raw)
  redis.call('ZREM', KEYS[2], name)
  audit('cancel', old, '')
  return {'cancelled', raw}
end

return redis.error_reply('unknown op ' .. op)
