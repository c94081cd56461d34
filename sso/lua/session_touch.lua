-- KEYS[1] the session's hash
-- KEYS[2] (optional) the revoked-marker of the access token being checked
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] hash of the session cookie to match, or "" when a token is checked
-- ARGV[4] the account version the token was issued at ("ver" claim; "0" without one or with a cookie)
-- Returns 1 (live, now slid), 0 (ended or expired), -1 (this token was revoked), -2 (cookie does not match);
-- for a token issued before its account's roles last changed, the session's roles now (a string) instead
-- of 1; with a cookie, a live answer is {1, user id, username, roles}
-- Retry: safe; it only slides the session (to the same last_seen_at).

-- Checked and slid by _slide.lua's slide().

local session = slide(KEYS[2], 'user_id', 'username', 'roles', 'version')
if type(session) == 'number' then
  return session
end
if ARGV[3] ~= '' then
  return {1, session[4], session[5], session[6]}
end
if tonumber(session[7] or '0') > tonumber(ARGV[4]) then
  return session[6]
end
return 1
