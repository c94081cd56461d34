-- KEYS[1] the user's session index: sorted set of session ids scored by creation time (ms)
-- KEYS[2] the new session's hash
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- ARGV[2] new session id
-- ARGV[3] now (ms)
-- ARGV[4] idle timeout (ms)
-- ARGV[5] absolute timeout (ms)
-- ARGV[6] most sessions a user may have
-- ARGV[7..] field, value pairs of the new session
-- Returns the ids of the sessions ended to make room (the oldest first)
-- Safe to run twice for the new session (same id, same fields), but a second run counts it as live: when the
-- user then has the most sessions allowed, it ends the oldest other one.

-- Dead ids are pruned here because nothing else removes them (no keyspace notifications).
local ended = {}
local live = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    live[#live + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
for i = 1, #live - tonumber(ARGV[6]) + 1 do
  redis.call('DEL', ARGV[1] .. live[i])
  redis.call('ZREM', KEYS[1], live[i])
  ended[#ended + 1] = live[i]
end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[2], math.min(tonumber(ARGV[4]), tonumber(ARGV[5])))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return ended
