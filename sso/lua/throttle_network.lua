-- KEYS[1] failed logins from the client network today (an attempt counts until it succeeds)
-- KEYS[2] the network's gate: exists while its unknown devices must wait (past the daily budget)
-- ARGV[1] "attempt" (before the password is checked), "gate" (the device cookie sent with a counted attempt
--         was not a known device after all) or "give_back" (it succeeded, or was refused elsewhere)
-- ARGV[2] failures allowed per network per day, ARGV[3] the day (s), ARGV[4] the longest wait (ms)
-- ARGV[5] "1" when the client sent a device cookie (the account's script tells whether it is known)
-- Returns {0, 0} go on (counted); {1, 0} past the budget, counted, and only a known device may go on: call
-- "gate" unless it is one; {2, wait (ms)} an unknown device must wait (not counted).
-- Retry: a retried "attempt" counts twice; a retried "give_back" gives back one more, never below zero; a retried
-- "gate" may refuse the call the first run let through (the client is told to retry).

-- The budget does not lock anyone out: past it, unknown devices of the network get one login per gate, and
-- the gate grows (1 s, 2 s, 4 s ...) with the failures beyond the budget, up to ARGV[4]. Known devices are
-- never held here: a crowd behind one address (NAT, a carrier's CGNAT) keeps logging in.

local mode = ARGV[1]
local budget = tonumber(ARGV[2])

local function pass_gate(failures)
  local wait = redis.call('PTTL', KEYS[2])
  if wait > 0 then
    return wait
  end
  local delay = math.min(tonumber(ARGV[4]), 1000 * 2 ^ math.min(failures - budget, 30))
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(delay))
  return 0
end

if mode == 'give_back' then
  if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    redis.call('DECR', KEYS[1])
  end
  return {0, 0}
end

local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if mode == 'gate' then
  local wait = pass_gate(failures - 1)
  if wait > 0 then
    if failures > 0 then
      redis.call('DECR', KEYS[1])
    end
    return {2, wait}
  end
  return {0, 0}
end

if failures >= budget and ARGV[5] ~= '1' then
  local wait = pass_gate(failures)
  if wait > 0 then
    return {2, wait}
  end
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if failures >= budget and ARGV[5] == '1' then
  return {1, 0}
end
return {0, 0}
