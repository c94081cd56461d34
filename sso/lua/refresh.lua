-- KEYS[1] the session's hash
-- KEYS[2] the user's session index
-- KEYS[3] the account's change record (sso.keys.account_change)
-- KEYS[4] the revocation journal of the user's shard
-- ARGV[1] digest of the presented refresh token
-- ARGV[2] digest of its successor (derived from the presented token, so a retried call brings the same)
-- ARGV[3] now (ms)
-- ARGV[4] idle timeout (ms)
-- ARGV[5] the session id
-- ARGV[6] grace (ms): how long the token just rotated still gets the same answer
-- ARGV[7] how many used tokens the session remembers for reuse detection
-- ARGV[8] rotations allowed per window, ARGV[9] the window (ms)
-- ARGV[10] how long journal entries are kept (ms), ARGV[11] the changes channel
-- ARGV[12] (optional) "" for the first-party login's refresh token, ":<client id>" for an OIDC client's: each
-- client has its own token in the session (fields refresh:<client id>, previous:..., used:..., its own window)
-- ARGV[13] (optional) the id (jti) of the access token issued with the successor, kept as jti<ARGV[12]> (a
-- second redemption of the client's code revokes it)
-- Returns {1, username, absolute_expires_at (ms), rotated_at (ms), account version, scope}: rotated, or the token
-- rotated last presented again within the grace (the same answer: nothing changes). 0: no such session (or it
-- expired, or its account was disabled). -1: an already used token (a reuse: the session is ended and
-- announced). -2: not a token of this session. {-3, retry after (ms)}: too many rotations in the window.
-- Retry: safe; a retried call (the same arguments: the successor is derived from the token, and now is the
-- first attempt's) presents the token it just rotated and gets the same answer, changing nothing.

local sfx = ARGV[12] or ''
local s = redis.call('HMGET', KEYS[1], 'refresh' .. sfx, 'absolute_expires_at', 'username', 'previous' .. sfx,
  'rotated_at' .. sfx, 'used' .. sfx, 'window_start' .. sfx, 'window_count' .. sfx, 'version', 'scope' .. sfx)
if not s[1] then
  return 0
end
local now = tonumber(ARGV[3])
local absolute = tonumber(s[2])
if now >= absolute or redis.call('HEXISTS', KEYS[3], 'disabled') == 1 then
  -- Its access tokens end with it (exp is capped at the absolute end); a disabling announced it already.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[5])
  return 0
end
local presented, successor = ARGV[1], ARGV[2]
-- Used tokens are remembered by the first 32 hex digits (128 bits) of their digest, newest first.
local mark = string.sub(presented, 1, 32)
local used = s[6] or ''
if s[1] == presented then
  local window = tonumber(ARGV[9])
  local start, count = tonumber(s[7] or '0'), tonumber(s[8] or '0')
  if now - start >= window then
    start, count = now, 0
  end
  if count >= tonumber(ARGV[8]) then
    return {-3, window - (now - start)}
  end
  used = string.sub(mark .. used, 1, 32 * tonumber(ARGV[7]))
  redis.call('HSET', KEYS[1], 'refresh' .. sfx, successor, 'previous' .. sfx, presented, 'rotated_at' .. sfx,
    ARGV[3], 'used' .. sfx, used, 'window_start' .. sfx, string.format('%d', start), 'window_count' .. sfx,
    count + 1, 'last_seen_at', ARGV[3])
  if (ARGV[13] or '') ~= '' then
    redis.call('HSET', KEYS[1], 'jti' .. sfx, ARGV[13])
  end
  redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[4]), absolute - now))
  return {1, s[3], s[2], ARGV[3], s[9] or '0', s[10] or ''}
end
if s[4] == presented and s[1] == successor and now - tonumber(s[5]) <= tonumber(ARGV[6]) then
  return {1, s[3], s[2], s[5], s[9] or '0', s[10] or ''}
end
for i = 1, #used, 32 do
  if string.sub(used, i, i + 31) == mark then
    -- A stolen token or a late replay: both holders lose the session (OAuth 2.0 Security BCP 4.14.2).
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[5])
    announce(4, ARGV[10], ARGV[11], {'s:' .. ARGV[5]})
    return -1
  end
end
return -2
