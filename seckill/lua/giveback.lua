-- KEYS[1] event meta hash, KEYS[2] user -> held orders hash, KEYS[3] set of order ids whose stock came back,
-- KEYS[4] set of order ids whose quota alone came back (all of ONE bucket)
-- ARGV[1] stock-back channel, ARGV[2] event id, ARGV[3] what comes back to this bucket: "both" (the order's
-- stock bucket is its user's home bucket: always so for one-bucket events), "stock" or "quota"; then pairs
-- ARGV[2+2i] order id, ARGV[3+2i] user id
-- Returns the number of orders given back by this call (those already returned count 0), or -1 if the event
-- is not in Redis
-- Retry: safe; a second call finds every order of the list in the returned set and answers 0: nothing comes
-- back twice.

-- Idempotent per order id: the returned sets record every give-back, so a sweeper that crashed halfway or two
-- sweepers racing can apply the same list again without returning anything twice. A bucketed order whose
-- stock came from another bucket gives its stock back there and its quota back to the home bucket.

local meta, users, returned, quota_returned = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then
  return -1
end
local what = ARGV[3]
local seen = returned
if what == 'quota' then
  seen = quota_returned
end
local applied = 0
for i = 1, (#ARGV - 3) / 2 do
  local order_id, user = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if redis.call('SADD', seen, order_id) == 1 then
    if what ~= 'quota' then
      redis.call('HINCRBY', meta, 'stock', 1)
    end
    if what ~= 'stock' then
      if redis.call('HINCRBY', users, user, -1) < 0 then
        redis.call('HSET', users, user, 0)
      end
    end
    applied = applied + 1
  end
end
if applied > 0 and what ~= 'quota' then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return applied
