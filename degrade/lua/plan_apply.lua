-- Apply a degradation plan (every switch it names at once, the modes they had recorded), roll it back (every
-- one of those switches to exactly what it was), or apply the plan whose scheduled time has come on the Redis
-- clock; each with one audit entry naming the plan and one publish carrying every change.
-- KEYS[1] plans hash ({degrade}:plans), KEYS[2] schedule sorted set, KEYS[3] switches hash ({degrade}:switches),
-- KEYS[4] audit stream
-- ARGV[1] op: "apply", "rollback" or "due"; ARGV[2] plan name ("" for due); ARGV[3] who; ARGV[4] reason
-- ARGV[5] call id ("" for due); ARGV[6] audit entries kept; ARGV[7] pub/sub channel
-- ARGV[8] subsystems core by their default tier "a,b", ARGV[9] the core tiers "x,y" (due only: a subsystem is core
-- if it is core by default or its stored tier, KEYS[3]'s tier:NAME, is core now, whatever the caller's copy of the
-- switches says; a plan scheduled without force that sheds a core one is dropped, not applied)
-- Returns {status, record JSON, changed "a,b", overridden "a,b", published message JSON or ""}: status
-- "applied", "rolled_back", "none" (due: nothing is due), "refused" (due: it needed force; changed names the core
-- subsystems), "unknown" (no such plan), "not_applied" (rollback: nothing to roll back). overridden: switches a
-- rollback found changed by someone else since the plan set them (restored to the recorded mode all the same).
-- Retry: safe. An apply or rollback sent again with the same call id answers what the first call did and
-- writes, audits and publishes nothing; a due call sent again finds the plan it applied gone from the schedule
-- ("none"), so a due plan is applied once however many processes try.

local op, who, reason, id = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function none(v)
  return v == nil or v == cjson.null
end

-- "a=shed,b=partial:30" -> {"a", "b"}, {a = "shed", b = "partial:30"}
local function parse(text)
  local names, values = {}, {}
  for sub, value in string.gmatch(text, '([^,=]+)=([^,]*)') do
    names[#names + 1] = sub
    values[sub] = value
  end
  return names, values
end

local function set(sub, value, why, by, source, items)
  redis.call('HSET', KEYS[3], 'mode:' .. sub, value, 'since:' .. sub, now, 'reason:' .. sub, why,
    'by:' .. sub, by, 'source:' .. sub, source)
  items[#items + 1] = {name = sub, field = 'mode', new = value}
end

-- Saves the record, writes the one audit entry and publishes the one message of the call.
local function finish(name, rec, call, entry, why, by, source, items, status, changed, overridden)
  rec.last = {id = call, status = status, changed = changed, overridden = overridden}
  local raw = cjson.encode(rec)
  redis.call('HSET', KEYS[1], name, raw)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'name', name, 'field', entry[1], 'old', entry[2],
    'new', entry[3], 'reason', entry[4], 'by', by, 'source', source, 'at', now)
  local message = cjson.encode({changes = items, at = now, reason = why, by = by, source = source, plan = name})
  redis.call('PUBLISH', ARGV[7], message)
  return {status, raw, changed, overridden, message}
end

local function apply(name, rec, by, why_given, source, call)
  local names, wanted = parse(rec.changes)
  local prev_names, previous = {}, {}
  if not none(rec.applied) then
    -- Applied again before a rollback: what was there before the plan first took effect stays the record.
    prev_names, previous = parse(rec.applied.previous)
  end
  local why = 'plan ' .. name .. ': ' .. why_given
  local olds, changed, items = {}, {}, {}
  for _, sub in ipairs(names) do
    local old = redis.call('HGET', KEYS[3], 'mode:' .. sub) or 'auto'
    olds[#olds + 1] = sub .. '=' .. old
    if previous[sub] == nil then
      previous[sub] = old
      prev_names[#prev_names + 1] = sub
    end
    if old ~= wanted[sub] then
      set(sub, wanted[sub], why, by, source, items)
      changed[#changed + 1] = sub
    end
  end
  table.sort(prev_names)
  local prev = {}
  for _, sub in ipairs(prev_names) do
    prev[#prev + 1] = sub .. '=' .. previous[sub]
  end
  local changed_text = table.concat(changed, ',')
  rec.applied = {id = call, at_ms = now, by = by, reason = why_given, source = source,
    previous = table.concat(prev, ','), changes = rec.changes, changed = changed_text}
  if not none(rec.scheduled) then
    -- Applied now: the schedule is spent.
    redis.call('ZREM', KEYS[2], name)
    rec.scheduled = cjson.null
  end
  return finish(name, rec, call, {'plan', table.concat(olds, ','), rec.changes, why_given}, why, by, source,
    items, 'applied', changed_text, '')
end

if op == 'due' then
  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
  if #due == 0 then
    return {'none', '', '', '', ''}
  end
  local name = due[1]
  redis.call('ZREM', KEYS[2], name)
  local raw = redis.call('HGET', KEYS[1], name)
  if not raw then
    return {'none', '', '', '', ''}
  end
  local rec = cjson.decode(raw)
  if none(rec.scheduled) then
    return {'none', '', '', '', ''}
  end
  local s = rec.scheduled
  if not s.force then
    local by_default, core_tiers = {}, {}
    for sub in string.gmatch(ARGV[8], '[^,]+') do
      by_default[sub] = true
    end
    for tier in string.gmatch(ARGV[9], '[^,]+') do
      core_tiers[tier] = true
    end
    local names, wanted = parse(rec.changes)
    local hit = {}
    for _, sub in ipairs(names) do
      local core = by_default[sub] or core_tiers[redis.call('HGET', KEYS[3], 'tier:' .. sub) or '']
      if core and (wanted[sub] == 'shed' or string.sub(wanted[sub], 1, 8) == 'partial:') then
        hit[#hit + 1] = sub
      end
    end
    if #hit > 0 then
      local list = table.concat(hit, ',')
      rec.scheduled = cjson.null
      raw = cjson.encode(rec)
      redis.call('HSET', KEYS[1], name, raw)
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'name', name, 'field', 'cancel',
        'old', rec.changes .. ' at ' .. s.at, 'new', '', 'reason', 'not applied: it sheds core subsystem ' ..
        list .. ' and was scheduled without force', 'by', s.by, 'source', 'schedule', 'at', now)
      redis.call('PUBLISH', ARGV[7], cjson.encode({plans_changed = true, plan = name, at = now}))
      return {'refused', raw, list, '', ''}
    end
  end
  return apply(name, rec, s.by, s.reason, 'schedule', s.id .. ':due')
end

local name = ARGV[2]
local raw = redis.call('HGET', KEYS[1], name)
if not raw then
  return {'unknown', '', '', '', ''}
end
local rec = cjson.decode(raw)
if id ~= '' and not none(rec.last) and rec.last.id == id then
  return {rec.last.status, raw, rec.last.changed or '', rec.last.overridden or '', ''}
end

if op == 'apply' then
  return apply(name, rec, who, reason, 'ops', id)
end

if op == 'rollback' then
  if none(rec.applied) then
    return {'not_applied', raw, '', '', ''}
  end
  local names, previous = parse(rec.applied.previous)
  local _, set_by_plan = parse(rec.applied.changes)
  local why = 'rollback of plan ' .. name .. ': ' .. reason
  local olds, news, changed, overridden, items = {}, {}, {}, {}, {}
  for _, sub in ipairs(names) do
    local cur = redis.call('HGET', KEYS[3], 'mode:' .. sub) or 'auto'
    olds[#olds + 1] = sub .. '=' .. cur
    news[#news + 1] = sub .. '=' .. previous[sub]
    if set_by_plan[sub] ~= nil and cur ~= set_by_plan[sub] then
      overridden[#overridden + 1] = sub
    end
    if cur ~= previous[sub] then
      set(sub, previous[sub], why, who, 'ops', items)
      changed[#changed + 1] = sub
    end
  end
  rec.applied = cjson.null
  rec.rolled_back = {at_ms = now, by = who, reason = reason}
  return finish(name, rec, id, {'rollback', table.concat(olds, ','), table.concat(news, ','), reason}, why, who,
    'ops', items, 'rolled_back', table.concat(changed, ','), table.concat(overridden, ','))
end

return redis.error_reply('unknown op ' .. op)
