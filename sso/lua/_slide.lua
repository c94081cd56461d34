-- Not a script of its own: sso/scripts.py puts this in front of session_touch.lua, session_read.lua and
-- cookie_touch.lua, the strict check, the session read and the single sign-on hop, so that all three check and
-- slide a session the same way.
-- slide(revoked, ...) with KEYS[1] the session's hash, `revoked` the revoked-marker of the access token
-- presented (the caller's KEYS[2], nil with a cookie), ARGV[1] now (ms), ARGV[2] idle timeout (ms), ARGV[3]
-- hash of the session cookie to match ("" for a token); the other arguments are the fields to read besides
-- absolute_expires_at and cookie.
-- Returns a verdict (0 ended or expired, -1 token revoked, -2 cookie does not match) or, for a live session
-- now slid: {absolute_expires_at, cookie, last_seen_at, fields...}, the idle time it has left (ms) and when it
-- was last slid (ms: now, or less than a second before, when it was slid then and is left as it is).
-- Only slides the session: safe to run twice.

local function slide(revoked, ...)
  if revoked and redis.call('EXISTS', revoked) == 1 then
    return -1
  end
  local now = tonumber(ARGV[1])
  local s = redis.call('HMGET', KEYS[1], 'absolute_expires_at', 'cookie', 'last_seen_at', ...)
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
  local idle_ms = tonumber(ARGV[2])
  local last = tonumber(s[3] or '0')
  if now >= last and now - last < math.min(1000, idle_ms / 10) then
    -- Slid less than a second ago (a tenth of the idle timeout, when that is shorter): its expiry stands, so
    -- a crowd of checks of one session writes and replicates nothing. The idle end is at most that much early.
    return s, math.min(last + idle_ms, absolute) - now, last
  end
  local idle = math.min(idle_ms, absolute - now)
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], idle)
  return s, idle, now
end
