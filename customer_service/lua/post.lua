-- Admit one shopper's support message: the shopper's rate and, while customer_service is shed, a place in the
-- bounded inbox, in one step.
-- KEYS[1] inbox stream ({cs}:inbox), KEYS[2] the shopper's message counter ({cs}:rate:<user id>)
-- ARGV[1] messages per window, ARGV[2] window ms
-- ARGV[3] inbox capacity in entries; 0: do not queue (the message goes to PostgreSQL directly)
-- ARGV[4..] the inbox entry's field/value pairs (queueing only)
-- Returns {"ok", inbox entry id, "" when not queued}, {"rate_limited", ms until the window ends} or
-- {"full", capacity}
-- Retry: a retried call counts the message again and may queue it twice; both copies carry the same message
-- id, which the writer's ON CONFLICT (id) turns into one row. The inbox is never trimmed here: a full inbox
-- refuses new messages rather than dropping queued ones.

local capacity = tonumber(ARGV[3])
if capacity > 0 and redis.call('XLEN', KEYS[1]) >= capacity then
  return {'full', capacity}
end
local sent = redis.call('INCR', KEYS[2])
if sent == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if sent > tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[2])
  if left < 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    left = tonumber(ARGV[2])
  end
  return {'rate_limited', left}
end
if capacity == 0 then
  return {'ok', ''}
end
return {'ok', redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))}
