-- KEYS[1] order stream, KEYS[2] queued orders hash
-- ARGV[1] consumer group, ARGV[2] the stream entry ids to acknowledge, one per line; ARGV[3] the order ids to
-- forget as queued, one per line (fewer than the entries: an unreadable entry names none; may be "")
-- Returns the number of entries acknowledged

-- Called only after the PostgreSQL COMMIT. Only acknowledged entries are deleted from the stream, so an
-- unprocessed order is never trimmed. One XACK, XDEL and HDEL per slice of the batch, not per entry; the ids
-- travel as two strings because packing hundreds of arguments cost the writer more than this whole script.

local SLICE = 500

local function lines(text)
  local out = {}
  for line in string.gmatch(text, '[^\n]+') do
    out[#out + 1] = line
  end
  return out
end

local function each_slice(items, apply)
  for i = 1, #items, SLICE do
    apply(unpack(items, i, math.min(i + SLICE - 1, #items)))
  end
end

local acked = 0
each_slice(lines(ARGV[2]), function(...)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ...)
  redis.call('XDEL', KEYS[1], ...)
end)
each_slice(lines(ARGV[3]), function(...)
  redis.call('HDEL', KEYS[2], ...)
end)
return acked
