-- KEYS[1] the authorization code's hash (sso.keys.auth_code): the mark of its first redemption (`used`), and for
--   a code of the release before 2026-12-05, its record (`r`, sso.scripts.CodeRecord's order)
-- KEYS[2] the session's hash
-- KEYS[3] the OIDC side of the session (sso.keys.oidc_session)
-- KEYS[4] the shard's sessions with OIDC clients by absolute expiry (sso.keys.oidc_expiries)
-- KEYS[5] the revocation journal of the user's shard
-- ARGV[1] now (ms)
-- ARGV[2] idle timeout (ms)
-- ARGV[3] the authenticated client's id
-- ARGV[4] the redirect_uri presented at the token endpoint (for a sealed code: its sso.oidc.codes.redirect_digest)
-- ARGV[5] BASE64URL(SHA256(code_verifier)) of the verifier presented, or "" when none was
-- ARGV[6] the session id the code names
-- ARGV[7] digest of the refresh token to issue
-- ARGV[8] id (jti) of the access token to issue: also this call's mark on the used code
-- ARGV[9] how long a used code is remembered (ms): its lifetime + 600 s
-- ARGV[10] key prefix of revoked-token markers (sso.keys.revoked_token with an empty id)
-- ARGV[11] how long a revoked-token marker stays (ms): longer than an access token lives
-- ARGV[12] how long journal entries are kept (ms), ARGV[13] the changes channel
-- ARGV[14] how long the OIDC side of a session outlives its absolute end (ms)
-- ARGV[15] the user id the code names
-- ARGV[16] to ARGV[22] a sealed code's record (sso/oidc/codes.py, opened by the API): client_id, redirect_uri's
--   digest, code_challenge, code_challenge_method, scope, nonce, when it expires (ms); ARGV[16] "" for a code
--   of the release before, whose record is KEYS[1]'s `r` and whose expiry is that key's
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

local h = redis.call('HMGET', KEYS[1], 'used', 'r')
local now = tonumber(ARGV[1])
-- c: client_id, redirect_uri (or its digest), code_challenge, code_challenge_method, scope, nonce, expiry (ms)
local c
if ARGV[16] ~= '' then
  c = {ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20], ARGV[21], tonumber(ARGV[22])}
elseif h[2] then
  local r = cjson.decode(h[2])
  if r[7] ~= ARGV[6] then
    return 0
  end
  c = {r[1], r[2], r[5], r[6], r[3], r[4], now + 1}
else
  return 0
end
local used = h[1]
local client = ARGV[3]
local sfx = ':' .. client
if used and used ~= ARGV[8] then
  -- A second redemption (RFC 6749 4.1.2): refuse it and revoke what the first one issued.
  local first = used
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
if not used and now >= c[7] then
  return 0
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
local s = redis.call('HMGET', KEYS[2], 'absolute_expires_at', 'username', 'roles', 'version', 'auth_time',
  'created_at')
if not s[1] then
  return -5
end
local absolute = tonumber(s[1])
if now >= absolute then
  redis.call('DEL', KEYS[2])
  return -5
end
local username = s[2] or ''
-- A session opened before auth_time was recorded was opened by a sign-in at its creation.
local auth_time = s[5] or string.format('%d', math.floor(tonumber(s[6] or '0') / 1000))
local answer = {1, username, s[3] or '', s[4] or '0', s[1], c[5] or '', c[6] or '', auth_time}
if used then
  return answer
end
redis.call('HSET', KEYS[1], 'used', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('HDEL', KEYS[2], 'previous' .. sfx, 'rotated_at' .. sfx)
redis.call('HSET', KEYS[2], 'refresh' .. sfx, ARGV[7], 'scope' .. sfx, c[5] or '', 'grant' .. sfx, ARGV[8],
  'jti' .. sfx, ARGV[8], 'last_seen_at', ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.min(tonumber(ARGV[2]), absolute - now))
redis.call('HSET', KEYS[3], 'user_id', ARGV[15], 'username', username, 'absolute_expires_at', s[1],
  'c:' .. client, ARGV[1])
redis.call('PEXPIRE', KEYS[3], absolute - now + tonumber(ARGV[14]))
redis.call('ZADD', KEYS[4], s[1], ARGV[6])
return answer
