-- KEYS[1] event meta hash, KEYS[2] user -> held orders hash, KEYS[3] user -> orders ever hash,
-- KEYS[4] idempotency hash, KEYS[5] order stream, KEYS[6] queued orders hash (order id -> user id),
-- KEYS[7] holds hash (bucketed events: order id -> "user\nidempotency key\nms\nseq"), KEYS[8] this call's
-- answers (named after its first order id); all of ONE bucket
-- ARGV[1] attempts per user per window, ARGV[2] attempts per IP per window, ARGV[3] window ms, ARGV[4] key prefix
-- of the users' rate counters, ARGV[5] key prefix of the IPs' rate counters (both in the event's hash tag),
-- ARGV[6] how long this call's answers are kept (ms);
-- then one argument per purchase, ARGV[6+i] = "order id\nuser id\nclient IP\nidempotency key" (key may be "")
-- Returns one reply per purchase, in order: {"ok", order id, stock left} | {"replay", order id} |
-- {"rate_limited", retry after ms} | {"not_found"} | {"not_started"} | {"ended"} | {"limit_reached"} | {"sold_out"} |
-- {"hold", order id, seq} (bucketed event, this bucket sold out: the user's count is taken, see seckill/buckets.py) |
-- {"duplicate"} (this order id is already queued or held here: only the rate counters counted it; the caller
-- retries with a new id) | {"repairing"} (every purchase: this node is not the one that wrote the event's state,
-- a failover or restart may have lost writes; nothing is written until seckill/rederive.py re-derived it)
-- Retry: safe; the call's answers are kept in KEYS[8] for ARGV[6] ms, and a retried call gets them back and
-- changes nothing (not even the rate counters) but the answers' expiry: that write lets a WAIT sent after the
-- retry (durability "replica") cover the first run's writes, also on a new connection.

-- Checks run in this order: rate, idempotency replay, window, the user's limit BEFORE the stock, then the stock.
-- A reservation and its queued order message are written together by this one script, never one without the other.
-- A purchase travels as one argument and its rate counters are named from prefixes: packing five arguments
-- per purchase cost the Python side more than the whole script. The counters share the event's hash tag, so
-- they live in the same cluster slot as the declared keys.
-- A client library that retries a call whose answer was lost (a timeout after Redis ran it) sends the very same
-- call again: it gets the answers of the first run from KEYS[8], and nothing is sold twice. One key per call,
-- not one check per purchase: most of this script's cost is its number of redis.call()s.

local done = redis.call('GET', KEYS[8])
if done then
  redis.call('PEXPIRE', KEYS[8], ARGV[6])
  return cjson.decode(done)
end
local meta, users, seqs, idem, stream, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local holds, answers = KEYS[7], KEYS[8]
local user_rate, ip_rate, window_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local user_prefix, ip_prefix, keep_ms = ARGV[4], ARGV[5], ARGV[6]
local n = #ARGV - 6

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Numbers handed to redis.call() are printed with %.14g, which is slow; integers go as strings made with %d.
local now_text = string.format('%d', now_ms)
local conf = redis.call('HMGET', meta, 'start_ms', 'end_ms', 'limit', 'stock', 'reserved', 'buckets', 'bucket',
  'gen')
local start_ms, end_ms, limit = tonumber(conf[1]), tonumber(conf[2]), tonumber(conf[3])
-- The event's state was written (warm-up) or re-derived on the node whose replication id it keeps in 'gen'. A
-- promoted replica and a restarted server have a new one, and perhaps not every write the old one acknowledged:
-- nothing sells here until seckill/rederive.py recomputed stock and counts from PostgreSQL (~1 us per call).
if start_ms and conf[8] ~= string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') then
  local refused = {}
  for i = 1, n do
    refused[i] = {'repairing'}
  end
  return refused
end
-- A one-bucket event (no such fields before buckets existed) writes exactly the messages it always did.
local buckets, this_bucket = tonumber(conf[6] or '1'), conf[7] or '0'
-- Stock and the reservation counter live in locals during the batch and are written once at the end;
-- the script is atomic, so nobody can observe the difference.
local stock, reserved = tonumber(conf[4]), tonumber(conf[5] or '0')
local stock_at_start = stock

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
  local packed = ARGV[6 + i]
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
  if now_ms < start_ms then
    return {'not_started'}
  end
  if now_ms >= end_ms then
    return {'ended'}
  end
  if stock <= 0 and buckets <= 1 then
    if tonumber(redis.call('HGET', users, user) or '0') >= limit then
      return {'limit_reached'}
    end
    return {'sold_out'}
  end
  -- Count first and take it back when over the limit: one call instead of two for a purchase that goes through.
  if redis.call('HINCRBY', users, user, '1') > limit then
    redis.call('HINCRBY', users, user, '-1')
    return {'limit_reached'}
  end
  if stock <= 0 then
    -- This is the user's home bucket: the purchase is counted here, the stock is taken from another bucket.
    local seq = redis.call('HINCRBY', seqs, user, '1')
    if redis.call('HSETNX', holds, order_id, user .. '\n' .. key .. '\n' .. now_text .. '\n' .. seq) == 0 then
      redis.call('HINCRBY', seqs, user, '-1')
      redis.call('HINCRBY', users, user, '-1')
      return {'duplicate'}
    end
    if idem_field then
      redis.call('HSET', idem, idem_field, order_id)
    end
    return {'hold', order_id, seq}
  end
  -- An order id is unique (seckill/ids.py) but checked anyway, at no extra call: HSETNX instead of HSET. The
  -- user's count is the only thing written before it, and it is given back.
  if redis.call('HSETNX', queued, order_id, user) == 0 then
    redis.call('HINCRBY', users, user, '-1')
    return {'duplicate'}
  end
  stock = stock - 1
  reserved = reserved + 1
  -- Unique over the event's buckets: the n-th reservation of bucket b of N is n * N + b.
  local rsv = string.format('%d', reserved * buckets + tonumber(this_bucket))
  local seq = string.format('%d', redis.call('HINCRBY', seqs, user, '1'))
  if buckets > 1 then
    redis.call('XADD', stream, '*', 'o', order_id, 'u', user, 'q', seq, 'r', rsv, 't', now_text,
      'b', this_bucket, 'h', this_bucket)
  else
    redis.call('XADD', stream, '*', 'o', order_id, 'u', user, 'q', seq, 'r', rsv, 't', now_text)
  end
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
end
redis.call('SET', answers, cjson.encode(replies), 'PX', keep_ms)
return replies
