-- KEYS[1] event meta hash, KEYS[2] user -> held orders hash, KEYS[3] user -> orders ever hash,
-- KEYS[4] idempotency hash, KEYS[5] order stream, KEYS[6] queued orders hash (order id -> user id),
-- KEYS[7] holds hash (bucketed events: order id -> "user\nidempotency key\nms\nseq"); all of ONE bucket
-- ARGV[1] attempts per user per window, ARGV[2] attempts per IP per window, ARGV[3] window ms, ARGV[4] event id,
-- ARGV[5] key prefix of the users' rate counters, ARGV[6] key prefix of the IPs' rate counters, ARGV[7] key
-- prefix of the recent order ids, ARGV[8] their bucket length ms (all prefixes in the event's hash tag);
-- then one argument per purchase, ARGV[8+i] = "order id\nuser id\nclient IP\nidempotency key" (key may be "")
-- Returns one reply per purchase, in order: {"ok", order id, stock left} | {"replay", order id} |
-- {"rate_limited", retry after ms} | {"not_found"} | {"not_started"} | {"ended"} | {"limit_reached"} | {"sold_out"} |
-- {"hold", order id, seq} (bucketed event, this bucket sold out: the user's count is taken, see seckill/buckets.py)

-- Checks run in this order: rate, idempotency replay, window, the user's limit BEFORE the stock, then the stock.
-- A reservation and its queued order message are written together by this one script, never one without the other.
-- A purchase travels as one argument and its rate counters are named from prefixes: packing five arguments
-- per purchase cost the Python side more than the whole script. The counters share the event's hash tag, so
-- they live in the same cluster slot as the declared keys.

local meta, users, seqs, idem, stream, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local holds = KEYS[7]
local user_rate, ip_rate, window_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local event_id, user_prefix, ip_prefix = ARGV[4], ARGV[5], ARGV[6]
local recent_prefix, bucket_ms = ARGV[7], tonumber(ARGV[8])
local n = #ARGV - 8

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local conf = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'limit', 'stock', 'reserved', 'buckets', 'bucket')
local start_ms, end_ms, limit = tonumber(conf[1]), tonumber(conf[2]), tonumber(conf[3])
-- A one-bucket event (no such fields before buckets existed) writes exactly the messages it always did.
local buckets, this_bucket = tonumber(conf[6] or '1'), conf[7] or '0'
-- Stock and the reservation counter live in locals during the batch and are written once at the end;
-- the script is atomic, so nobody can observe the difference.
local stock, reserved = tonumber(conf[4]), tonumber(conf[5] or '0')
local stock_at_start = stock
-- Order ids of the last one to two buckets. A client library that retries a call whose answer was lost (a
-- timeout after Redis ran it) sends the same order ids again: they are answered as replays, not sold twice.
local bucket = math.floor(now_ms / bucket_ms)
local recent, previous = recent_prefix .. bucket, recent_prefix .. (bucket - 1)

local function over(key, allowed)
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('PEXPIRE', key, window_ms)
  end
  if count <= allowed then
    return nil
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window_ms)
    ttl = window_ms
  end
  return ttl
end

local function attempt(i)
  local packed = ARGV[8 + i]
  local a = string.find(packed, '\n', 1, true)
  local b = string.find(packed, '\n', a + 1, true)
  local c = string.find(packed, '\n', b + 1, true)
  local order_id, user = string.sub(packed, 1, a - 1), string.sub(packed, a + 1, b - 1)
  local ip, key = string.sub(packed, b + 1, c - 1), string.sub(packed, c + 1)
  local wait_ms = over(user_prefix .. user, user_rate) or over(ip_prefix .. ip, ip_rate)
  if wait_ms then
    return {'rate_limited', wait_ms}
  end
  if not start_ms then
    return {'not_found'}
  end
  local idem_field = nil
  if key ~= '' then
    idem_field = user .. '\n' .. key
    local known = redis.call('HGET', idem, idem_field)
    if known then
      return {'replay', known}
    end
  end
  if redis.call('HEXISTS', recent, order_id) == 1 or redis.call('HEXISTS', previous, order_id) == 1 then
    return {'replay', order_id}
  end
  if buckets > 1 then
    local hold = redis.call('HGET', holds, order_id)
    if hold then
      return {'hold', order_id, string.match(hold, '([^\n]*)$')}
    end
  end
  if now_ms < start_ms then
    return {'not_started'}
  end
  if now_ms >= end_ms then
    return {'ended'}
  end
  local held = tonumber(redis.call('HGET', users, user) or '0')
  if held >= limit then
    return {'limit_reached'}
  end
  if stock <= 0 then
    if buckets <= 1 then
      return {'sold_out'}
    end
    -- This is the user's home bucket: count the purchase here, the stock is taken from another bucket.
    redis.call('HINCRBY', users, user, 1)
    local seq = redis.call('HINCRBY', seqs, user, 1)
    redis.call('HSET', holds, order_id, user .. '\n' .. key .. '\n' .. now_ms .. '\n' .. seq)
    if idem_field then
      redis.call('HSET', idem, idem_field, order_id)
    end
    return {'hold', order_id, seq}
  end
  stock = stock - 1
  reserved = reserved + 1
  -- Unique over the event's buckets: the n-th reservation of bucket b of N is n * N + b.
  local rsv = reserved * buckets + tonumber(this_bucket)
  redis.call('HINCRBY', users, user, 1)
  local seq = redis.call('HINCRBY', seqs, user, 1)
  if buckets > 1 then
    redis.call('XADD', stream, '*', 'o', order_id, 'u', user, 'e', event_id, 'q', seq, 'r', rsv, 't', now_ms,
      'b', this_bucket, 'h', this_bucket)
  else
    redis.call('XADD', stream, '*', 'o', order_id, 'u', user, 'e', event_id, 'q', seq, 'r', rsv, 't', now_ms)
  end
  redis.call('HSET', queued, order_id, user)
  redis.call('HSET', recent, order_id, 1)
  if idem_field then
    redis.call('HSET', idem, idem_field, order_id)
  end
  return {'ok', order_id, stock}
end

local replies = {}
for i = 1, n do
  replies[i] = attempt(i)
end
if stock ~= stock_at_start then
  redis.call('HSET', meta, 'stock', stock, 'reserved', reserved)
  redis.call('PEXPIRE', recent, 3 * bucket_ms)
end
return replies
