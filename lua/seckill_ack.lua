-- KEYS[1] order stream, KEYS[2] queued orders hash
-- ARGV[1] consumer group, ARGV[2] n, the number of stream entry ids; ARGV[3 .. 2+n] the stream entry ids;
-- the remaining arguments are the order ids to forget as queued (fewer than n: an unreadable entry names none)
-- Returns the number of entries acknowledged

-- Called only after the PostgreSQL COMMIT. Only acknowledged entries are deleted from the stream, so an
-- unprocessed order is never trimmed. One XACK, XDEL and HDEL per slice of the batch, not per entry.

local SLICE = 500
local n = tonumber(ARGV[2])

local function each_slice(first, last, apply)
  for i = first, last, SLICE do
    apply(unpack(ARGV, i, math.min(i + SLICE - 1, last)))
  end
end

local acked = 0
each_slice(3, 2 + n, function(...)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ...)
  redis.call('XDEL', KEYS[1], ...)
end)
each_slice(3 + n, #ARGV, function(...)
  redis.call('HDEL', KEYS[2], ...)
end)
return acked
