-- Not a script of its own: sso/scripts.py puts this in front of every script that ends sessions, revokes
-- tokens or changes an account, so that the change and its announcement are one atomic step.
-- announce(journal, keep_ms, channel, messages): each message goes into the journal (a key of the caller's
-- hash tag) scored by the Redis clock (ms), entries older than keep_ms leave it, and all the messages go to the
-- channel as one message, separated by spaces. Nothing happens for an empty list.

local function announce(journal, keep_ms, channel, messages)
  if #messages == 0 then
    return
  end
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local score = string.format('%d', now)
  for _, message in ipairs(messages) do
    redis.call('ZADD', KEYS[journal], score, message)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[journal], '-inf', string.format('(%d', now - tonumber(keep_ms)))
  redis.call('PUBLISH', channel, table.concat(messages, ' '))
end
