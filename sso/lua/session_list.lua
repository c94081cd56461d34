-- KEYS[1] the user's session index
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- Returns one flat entry per live session, oldest first: id, created_at, last_seen_at, absolute_expires_at,
-- ip, user_agent, remaining idle time (ms)
-- Retry: safe (reads; prunes the ids of expired sessions).

-- Reading the index prunes it: ids whose hash expired are removed.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'created_at', 'last_seen_at', 'absolute_expires_at', 'ip', 'user_agent')
  if f[1] then
    out[#out + 1] = {id, f[1], f[2], f[3], f[4] or '', f[5] or '', redis.call('PTTL', key)}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
