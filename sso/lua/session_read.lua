-- GET /sso/session in one round trip: session_touch.lua's check and slide, answering the session's fields.
-- KEYS[1] the session's hash
-- KEYS[2] (optional) the revoked-marker of the access token presented
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] hash of the session cookie to match, or "" when an access token is presented
-- Returns 0 (ended or expired), -1 (this token was revoked), -2 (cookie does not match); for a live session,
-- now slid: {user id, username, roles (space-separated), account version, created_at, last_seen_at (now),
-- idle_expires_at, absolute_expires_at, ip, user agent}, the times in whole seconds (as the answer shows them)
-- Safe to run twice: it only slides the session.

if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'absolute_expires_at', 'cookie', 'user_id', 'username', 'roles',
  'version', 'created_at', 'ip', 'user_agent')
if not s[1] then
  return 0
end
local absolute = tonumber(s[1])
if now >= absolute then
  -- No announcement needed: no access token of the session outlives its absolute end (their exp is capped).
  redis.call('DEL', KEYS[1])
  return 0
end
if ARGV[3] ~= '' and s[2] ~= ARGV[3] then
  return -2
end
local idle = math.min(tonumber(ARGV[2]), absolute - now)
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], idle)
return {s[3] or '', s[4] or '', s[5] or '', tonumber(s[6] or '0'), math.floor(tonumber(s[7] or '0') / 1000),
  math.floor(now / 1000), math.floor((now + idle) / 1000), math.floor(absolute / 1000), s[8] or '', s[9] or ''}
