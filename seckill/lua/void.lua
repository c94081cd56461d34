-- KEYS[1] set of held order ids taken in this bucket, KEYS[2] set of held order ids voided in this bucket
-- ARGV[1] order id of a stale hold
-- Returns 1 if the order was taken here, 0 if it was not (and now never can be)
-- Retry: safe; a second call answers the same and changes nothing.

-- The fence of the hold sweeper: after this call answered 0 in every bucket, no bucket can take the hold, so
-- releasing it cannot let the user exceed the limit.

if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
redis.call('SADD', KEYS[2], ARGV[1])
return 0
