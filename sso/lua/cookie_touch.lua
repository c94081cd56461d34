-- The single sign-on hop's check of its session cookie (GET /sso/authorize with a live session): check and
-- slide the session as the strict check does (_slide.lua's slide()) and read when its password sign-in was.
-- The hop writes nothing else: its code is sealed by the API (sso/oidc/codes.py).
-- KEYS[1] the session's hash
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] hash of the session cookie presented
-- Returns {1, auth_time (s)} for a live session, now slid; 0 (the session ended or expired) or -2 (the cookie
-- does not match)
-- Retry: safe; it only slides the session.

local s = slide(nil, 'auth_time', 'created_at')
if type(s) == 'number' then
  return s
end
-- A session opened before auth_time was recorded was opened by a sign-in at its creation.
return {1, tonumber(s[4] or '') or math.floor(tonumber(s[5] or '0') / 1000)}
