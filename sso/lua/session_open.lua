-- KEYS[1] the user's session index: sorted set of session ids scored by creation time (ms)
-- KEYS[2] the new session's hash
-- KEYS[3] the account's change record (sso.keys.account_change)
-- KEYS[4] the revocation journal of the user's shard
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- ARGV[2] new session id
-- ARGV[3] now (ms)
-- ARGV[4] idle timeout (ms)
-- ARGV[5] absolute timeout (ms)
-- ARGV[6] most sessions a user may have
-- ARGV[7] how long journal entries are kept (ms)
-- ARGV[8] the changes channel
-- ARGV[9] the account's roles as the login read them (space-separated)
-- ARGV[10..] field, value pairs of the new session
-- Returns -1 when the account was disabled since the login read it (no session is made); else
-- {account version, roles, ids of the sessions ended to make room (oldest first)...}: the roles are the
-- change record's when `peak sso` changed them lately (the login may have read them before the change), and
-- each session ended is announced by this call.
-- Retry: safe; a second call (same id, same fields) finds the new session made and ends no other one: it
-- answers the same version and roles, without the ids the first run ended and announced (unused by the caller).

local change = redis.call('HMGET', KEYS[3], 'version', 'roles', 'disabled')
if change[3] then
  return -1
end
local version = change[1] or '0'
local roles = change[2] or ARGV[9]
-- Dead ids are pruned here because nothing else removes them (no keyspace notifications).
local ended = {}
local live = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  -- The new session itself is there only when this is a retried call: it takes no place from another one.
  if id ~= ARGV[2] then
    if redis.call('EXISTS', ARGV[1] .. id) == 1 then
      live[#live + 1] = id
    else
      redis.call('ZREM', KEYS[1], id)
    end
  end
end
local messages = {}
for i = 1, #live - tonumber(ARGV[6]) + 1 do
  redis.call('DEL', ARGV[1] .. live[i])
  redis.call('ZREM', KEYS[1], live[i])
  ended[#ended + 1] = live[i]
  messages[#messages + 1] = 's:' .. live[i]
end
redis.call('HSET', KEYS[2], 'roles', roles, 'version', version, unpack(ARGV, 10))
redis.call('PEXPIRE', KEYS[2], math.min(tonumber(ARGV[4]), tonumber(ARGV[5])))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
announce(4, ARGV[7], ARGV[8], messages)
return {version, roles, unpack(ended)}
