-- One step of the back-channel logout's reading of one shard (sso/oidc/backchannel_feed.py): every key is in
-- the shard's slot. It finds the shard's OIDC sessions that ended since the last step and queues each (with
-- the clients that received tokens in it) in the shard's outbox, marking its OIDC record ended, so each ended
-- session is queued once whatever found it:
--   the revocation journal ("s:<sid>" entries newer than the cursor: logout, logout everywhere, password change,
--   admin disable, refresh token reuse), the cursor advancing in the same step;
--   the absolute cap (sessions of KEYS[3] whose score, the absolute end in ms, has passed);
--   idle expiry, when asked (ARGV[6] >= 0): a slice of KEYS[3] by rank whose session key is gone.
-- KEYS[1] the shard's revocation journal (sso.keys.JOURNALS)
-- KEYS[2] the shard's journal cursor (sso.keys.backchannel_cursor): the last journal score read (ms)
-- KEYS[3] the shard's OIDC sessions by absolute end (sso.keys.oidc_expiries)
-- KEYS[4] the shard's outbox stream (sso.keys.backchannel_outbox)
-- KEYS[5] the shard's reading lease (sso.keys.backchannel_lease)
-- ARGV[1] the caller's lease token
-- ARGV[2] the lease's lifetime (ms)
-- ARGV[3] OIDC record prefix (sso.keys.oidc_session_prefix: a session id appended gives its record)
-- ARGV[4] the shard's user key prefix (sso.keys.shard_user_prefix: .. user id .. ':s:' .. session id)
-- ARGV[5] most journal entries, and most due absolute ends, read per step
-- ARGV[6] rank in KEYS[3] where this step's idle check starts, or -1 for none
-- ARGV[7] how many sessions the idle check looks at
-- Returns {held, outbox length, next idle rank}: held 0 (and nothing done) while another worker's lease is
-- live; the next idle rank is -1 once the idle check has reached the end of KEYS[3].
-- Retry: safe. A second run finds the cursor advanced and the records marked, and queues nothing again.

local owner = redis.call('GET', KEYS[5])
if owner and owner ~= ARGV[1] then
  return {0, 0, -1}
end
redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[2])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local now_s = string.format('%d', now)
local batch = tonumber(ARGV[5])

local function queue(sid, reason)
  local record = ARGV[3] .. sid
  local fields = redis.call('HGETALL', record)
  redis.call('ZREM', KEYS[3], sid)
  if #fields == 0 then
    return
  end
  local user_id = ''
  local clients = {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'ended_at' then
      return
    elseif name == 'user_id' then
      user_id = fields[i + 1]
    elseif string.sub(name, 1, 2) == 'c:' then
      clients[#clients + 1] = string.sub(name, 3)
    end
  end
  redis.call('HSET', record, 'ended_at', now_s)
  if #clients > 0 then
    table.sort(clients)
    redis.call('XADD', KEYS[4], '*', 'sid', sid, 'sub', user_id, 'clients', cjson.encode(clients),
      'reason', reason)
  end
end

local function from_journal(member)
  if string.sub(member, 1, 2) == 's:' then
    queue(string.sub(member, 3), 'ended')
  end
end

-- The journal, from the cursor. Entries of one score are one announcement: all are read together, so the
-- cursor never stops in the middle of one.
local cursor = redis.call('GET', KEYS[2]) or '0'
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, batch)
local last = cursor
for i = 1, #rows, 2 do
  from_journal(rows[i])
  last = rows[i + 1]
end
if #rows / 2 == batch then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], last, last)) do
    from_journal(member)
  end
end
if last ~= cursor then
  redis.call('SET', KEYS[2], last)
end

-- The absolute cap.
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_s, 'LIMIT', 0, batch)) do
  queue(sid, 'expired')
end

-- Idle expiry: the session key is gone (its idle TTL ran out) while its OIDC record remains.
local next_rank = -1
local start = tonumber(ARGV[6])
if start >= 0 then
  local count = tonumber(ARGV[7])
  local members = redis.call('ZRANGE', KEYS[3], start, start + count - 1)
  local removed = 0
  for _, sid in ipairs(members) do
    local user_id = redis.call('HGET', ARGV[3] .. sid, 'user_id')
    if not user_id then
      redis.call('ZREM', KEYS[3], sid)
      removed = removed + 1
    elseif redis.call('EXISTS', ARGV[4] .. user_id .. ':s:' .. sid) == 0 then
      queue(sid, 'idle')
      removed = removed + 1
    end
  end
  if #members == count then
    next_rank = start + count - removed
  end
end

return {1, redis.call('XLEN', KEYS[4]), next_rank}
