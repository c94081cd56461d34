-- KEYS[1] order stream, KEYS[2] queued orders hash
-- ARGV[1] consumer group, ARGV[2] the stream entry ids to acknowledge, one per line (may be "": only trim, after a
-- dead letter); ARGV[3] the order ids to forget as queued, one per line (fewer than the entries: an unreadable
-- entry names none; may be "")
-- Returns the number of entries acknowledged
-- Retry: safe; a second call acknowledges and forgets nothing more (it answers 0: the first run acknowledged
-- them) and trims to the same point.

-- Called only after the PostgreSQL COMMIT. Only acknowledged entries leave the stream, so an unprocessed order is
-- never trimmed: every entry below the oldest pending one (or, with none pending, up to the last one delivered)
-- is acknowledged, and XTRIM MINID drops them whole listpack nodes at a time. XDEL of the acknowledged ids cost
-- Redis 1.1 us per order (issue 6). Acknowledged entries above a pending one (another writer's batch still in
-- flight) stay until a later call. One XACK and HDEL per slice of the batch, not per entry; the ids travel as
-- two strings because packing hundreds of arguments cost the writer more than this whole script.

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
end)
each_slice(lines(ARGV[3]), function(...)
  redis.call('HDEL', KEYS[2], ...)
end)

local oldest = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)[1]
local keep_from
if oldest then
  keep_from = oldest[1]
else
  local delivered = nil
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for i = 1, #group, 2 do
      info[group[i]] = group[i + 1]
    end
    if info['name'] == ARGV[1] then
      delivered = info['last-delivered-id']
    end
  end
  local ms, seq = string.match(delivered or '0-0', '^(%d+)-(%d+)$')
  keep_from = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', keep_from)
return acked
