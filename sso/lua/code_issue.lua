-- The single sign-on hop (GET /sso/authorize with a live session cookie): check and slide the session as the
-- strict check does (_slide.lua's slide()) and write the authorization code, in one round trip.
-- KEYS[1] the session's hash
-- KEYS[2] the new code's hash (sso.keys.auth_code: named by the code's digest, in the user's slot)
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] hash of the session cookie presented
-- ARGV[4] the client's max_age (s), or -1 for none
-- ARGV[5] the code's lifetime (ms)
-- ARGV[6] the code's record: a JSON array of the values of sso.scripts.CodeRecord's fields (client_id,
--   redirect_uri, scope, nonce, code_challenge, code_challenge_method, sid, user_id, issued_at), written as
--   the field `r`; the script adds `username` and `auth_time` from the session
-- Returns 1 (the code is written and the session slid), 0 (the session ended or expired), -2 (the cookie does
-- not match), -3 (the session's password sign-in is older than max_age: ask for the password again; no code)
-- Retry: safe; a second run finds the code the first one wrote (its key names a random 256-bit secret) and
-- answers 1 again without writing anything.

if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
-- No revoked-marker to check (a cookie): KEYS[2] is the code, found absent just above.
local s = slide(nil, 'username', 'auth_time', 'created_at')
if type(s) == 'number' then
  return s
end
-- A session opened before auth_time was recorded was opened by a sign-in at its creation.
local auth_time = tonumber(s[5] or '') or math.floor(tonumber(s[6] or '0') / 1000)
local max_age = tonumber(ARGV[4])
if max_age >= 0 and math.floor(tonumber(ARGV[1]) / 1000) - auth_time > max_age then
  return -3
end
redis.call('HSET', KEYS[2], 'r', ARGV[6], 'username', s[4] or '', 'auth_time', string.format('%d', auth_time))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
