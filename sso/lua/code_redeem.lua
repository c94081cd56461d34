-- KEYS[1] the authorization code's hash (sso.keys.auth_code; its record as code_issue.lua writes it)
-- KEYS[2] the session's hash
-- KEYS[3] the OIDC side of the session (sso.keys.oidc_session)
-- KEYS[4] the shard's sessions with OIDC clients by absolute expiry (sso.keys.oidc_expiries)
-- KEYS[5] the revocation journal of the user's shard
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] the authenticated client's id
-- ARGV[4] the redirect_uri presented at the token endpoint
-- ARGV[5] BASE64URL(SHA256(code_verifier)) of the verifier presented, or "" when none was
-- ARGV[6] the session id the code names
-- ARGV[7] digest of the refresh token to issue
-- ARGV[8] id (jti) of the access token to issue: also this call's mark on the used code
-- ARGV[9] how long a used code is remembered (ms): its lifetime + 600 s
-- ARGV[10] key prefix of revoked-token markers (sso.keys.revoked_token with an empty id)
-- ARGV[11] how long a revoked-token marker stays (ms): longer than an access token lives
-- ARGV[12] how long journal entries are kept (ms), ARGV[13] the changes channel
-- ARGV[14] how long the OIDC side of a session outlives its absolute end (ms)
-- Returns {1, username, roles, account version, absolute_expires_at (ms), scope, nonce, auth_time (s)}: the
-- code is now used, the client's refresh token (ARGV[7]) and grant (ARGV[8]) are in the session (replacing an
-- older one of that client), the session is slid and the client recorded in KEYS[3] and KEYS[4].
-- 0: no such code (unknown or expired). -1: the code was used before: what its first redemption issued (the
-- access token ARGV[8] of then, the client's refresh token if still of that grant) is now revoked and announced.
-- -2: another client's code. -3: another redirect_uri. -4: the PKCE verifier does not match (or is missing,
-- or was sent for a code without a challenge). -5: the session has ended. A refused code (-2 to -4) stays
-- unused: the real client may still redeem it.
-- Retry: safe; a retried call (the same ARGV[8]) finds the code used by itself and gives the same answer,
-- changing nothing.

local h = redis.call('HMGET', KEYS[1], 'r', 'auth_time', 'used', 'client_id', 'redirect_uri', 'code_challenge',
  'code_challenge_method', 'sid', 'user_id', 'scope', 'nonce')
-- c: client_id, redirect_uri, code_challenge, code_challenge_method, sid, user_id, scope, nonce, auth_time, used
local c
if h[1] then
  -- code_issue.lua's record (sso.scripts.CodeRecord's order)
  local r = cjson.decode(h[1])
  c = {r[1], r[2], r[5], r[6], r[7], r[8], r[3], r[4], h[2], h[3]}
else
  -- A record of the release before 2026-12-04, a field each (none is left 60 s after the deploy), or none.
  c = {h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[2], h[3]}
end
if not c[1] or c[5] ~= ARGV[6] then
  return 0
end
local client = ARGV[3]
local sfx = ':' .. client
if c[10] and c[10] ~= ARGV[8] then
  -- A second redemption (RFC 6749 4.1.2): refuse it and revoke what the first one issued.
  local first = c[10]
  local messages = {'j:' .. first}
  local s = redis.call('HMGET', KEYS[2], 'grant:' .. c[1], 'jti:' .. c[1])
  if s[1] == first then
    local fields = {'refresh', 'previous', 'rotated_at', 'used', 'window_start', 'window_count', 'scope', 'jti',
      'grant'}
    for i, f in ipairs(fields) do
      fields[i] = f .. ':' .. c[1]
    end
    redis.call('HDEL', KEYS[2], unpack(fields))
    if s[2] and s[2] ~= first then
      -- The access token of the client's latest refresh in that grant.
      redis.call('SET', ARGV[10] .. s[2], '1', 'PX', ARGV[11])
      messages[#messages + 1] = 'j:' .. s[2]
    end
  end
  redis.call('SET', ARGV[10] .. first, '1', 'PX', ARGV[11])
  announce(5, ARGV[12], ARGV[13], messages)
  return -1
end
if c[1] ~= client then
  return -2
end
if c[2] ~= ARGV[4] then
  return -3
end
local challenge = c[3] or ''
if challenge ~= ARGV[5] or (challenge ~= '' and c[4] ~= 'S256') then
  return -4
end
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[2], 'absolute_expires_at', 'username', 'roles', 'version')
if not s[1] then
  return -5
end
local absolute = tonumber(s[1])
if now >= absolute then
  redis.call('DEL', KEYS[2])
  return -5
end
local username = s[2] or ''
local answer = {1, username, s[3] or '', s[4] or '0', s[1], c[7] or '', c[8] or '', c[9] or ''}
if c[10] then
  return answer
end
redis.call('HSET', KEYS[1], 'used', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('HDEL', KEYS[2], 'previous' .. sfx, 'rotated_at' .. sfx)
redis.call('HSET', KEYS[2], 'refresh' .. sfx, ARGV[7], 'scope' .. sfx, c[7] or '', 'grant' .. sfx, ARGV[8],
  'jti' .. sfx, ARGV[8], 'last_seen_at', ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.min(tonumber(ARGV[2]), absolute - now))
redis.call('HSET', KEYS[3], 'user_id', c[6] or '', 'username', username, 'absolute_expires_at', s[1], 'c:' .. client,
  ARGV[1])
redis.call('PEXPIRE', KEYS[3], absolute - now + tonumber(ARGV[14]))
redis.call('ZADD', KEYS[4], s[1], ARGV[6])
return answer
