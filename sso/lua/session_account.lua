-- KEYS[1] the user's session index
-- KEYS[2] the account's change record (sso.keys.account_change)
-- KEYS[3] the revocation journal of the user's shard
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- ARGV[2] the user id
-- ARGV[3] "roles" (the account's roles changed) or "disable" (the account was disabled)
-- ARGV[4] the account's roles now (space-separated)
-- ARGV[5] how long the change record is kept (ms)
-- ARGV[6] how long journal entries are kept (ms)
-- ARGV[7] the changes channel
-- Returns {the account's new version, ids of the sessions ended...}. The account version (the Redis clock in
-- ms, and always above the last one) goes into the record and, for "roles", into every live session with the
-- new roles; for "disable" every session ends. Announced by this call: "u:<user id>:<version>" (validators
-- refuse the user's tokens issued at an older version), and "s:<id>" for each session ended.
-- Retry: not idempotent, and harmless: a second run answers a newer version and announces it again, which only
-- makes tokens issued between the two runs refresh once more; for "disable" it ends no session more.

local time = redis.call('TIME')
local version = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if version <= last then
  version = last + 1
end
version = string.format('%d', version)
redis.call('HSET', KEYS[2], 'version', version, 'roles', ARGV[4])
if ARGV[3] == 'disable' then
  redis.call('HSET', KEYS[2], 'disabled', '1')
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local ended = {}
local messages = {'u:' .. ARGV[2] .. ':' .. version}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  elseif ARGV[3] == 'disable' then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    ended[#ended + 1] = id
    messages[#messages + 1] = 's:' .. id
  else
    redis.call('HSET', key, 'roles', ARGV[4], 'version', version)
  end
end
announce(3, ARGV[6], ARGV[7], messages)
return {version, unpack(ended)}
