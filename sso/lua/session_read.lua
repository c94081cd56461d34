-- GET /sso/session in one round trip: session_touch.lua's check and slide, answering the session's fields.
-- KEYS[1] the session's hash
-- KEYS[2] (optional) the revoked-marker of the access token presented
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] hash of the session cookie to match, or "" when an access token is presented
-- Returns 0 (ended or expired), -1 (this token was revoked), -2 (cookie does not match); for a live session,
-- now slid: {user id, username, roles (space-separated), account version, created_at, last_seen_at (now, or
-- under a second before: _slide.lua), idle_expires_at, absolute_expires_at, ip, user agent}, the times in
-- whole seconds (as the answer shows them)
-- Retry: safe; it only slides the session (to the same last_seen_at).

-- Checked and slid by _slide.lua's slide(), as the strict check does.

local s, idle, seen = slide(KEYS[2], 'user_id', 'username', 'roles', 'version', 'created_at', 'ip', 'user_agent')
if type(s) == 'number' then
  return s
end
local now = tonumber(ARGV[1])
return {s[4] or '', s[5] or '', s[6] or '', tonumber(s[7] or '0'), math.floor(tonumber(s[8] or '0') / 1000),
  math.floor(seen / 1000), math.floor((now + idle) / 1000), math.floor(tonumber(s[1]) / 1000), s[9] or '',
  s[10] or ''}
