-- KEYS[1] the session's hash
-- KEYS[2] the user's session index
-- ARGV[1] hash of the presented refresh token
-- ARGV[2] hash of the new refresh token
-- ARGV[3] now (ms)
-- ARGV[4] idle timeout (ms)
-- ARGV[5] the account's current roles
-- ARGV[6] the session id
-- Returns {1, username} (rotated), 0 (no such session), -1 (an already used token: reuse, the session is now ended),
-- -2 (not a token of this session)
-- Not safe to run twice: a call retried after its answer was lost presents a token that is now used, is taken
-- for a reuse and ends the session.

local session = redis.call('HMGET', KEYS[1], 'refresh', 'absolute_expires_at', 'username')
if not session[1] then
  return 0
end
local now = tonumber(ARGV[3])
local absolute = tonumber(session[2])
if now >= absolute then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[6])
  return 0
end
if session[1] ~= ARGV[1] then
  if redis.call('HEXISTS', KEYS[1], 'used:' .. ARGV[1]) == 1 then
    -- A stolen token or a replay: both holders lose the session (OAuth 2.0 Security BCP 4.14.2).
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[6])
    return -1
  end
  return -2
end
redis.call('HSET', KEYS[1], 'used:' .. ARGV[1], '1', 'refresh', ARGV[2], 'roles', ARGV[5], 'last_seen_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[4]), absolute - now))
return {1, session[3]}
