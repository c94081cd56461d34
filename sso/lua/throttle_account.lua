-- KEYS[1] failed logins of the account from unknown devices (exists or not: the answer must not tell)
-- KEYS[2] failed logins of the account from the client's network, unknown devices only
-- KEYS[3] the account's known devices: hash of "s:<digest>" last success (ms) and "f:<digest>" failures since
-- ARGV[1] "attempt" (before the password is checked), "known_ok" or "unknown_ok" (it was right), "give_back"
--         (a counted attempt was not decided after all: refused by the network throttle, or PostgreSQL was gone)
-- ARGV[2] failures allowed per account per window, ARGV[3] per account and network per window
-- ARGV[4] account window (s), ARGV[5] failures a known device may make, ARGV[6] device lifetime (ms)
-- ARGV[7] devices kept per account, ARGV[8] now (ms)
-- ARGV[9..] attempt: digests of the device tokens the client sent; known_ok: the known device's digest;
--           unknown_ok: the digest of the device token now issued; give_back: the known device's digest, or
--           none for an unknown device
-- Returns for "attempt": {0, 0} an unknown device, counted against the account and the pair; {1, i} the i-th
-- digest is a known device of the account, counted against that device only; {2, retry after (s)} unknown
-- devices of this account (from this network, or from everywhere) must wait. Otherwise {0, 0}.
-- Retry: a retried "attempt" counts twice (errs on the side of locking); a retried "give_back" gives
-- back one attempt more, never below zero; "unknown_ok" and "known_ok" are safe to run twice.

-- Attempts count before the password is checked and a success gives them back, so simultaneous guesses
-- cannot all slip in before the first failure is recorded. A known device is judged by its own failures only:
-- failures from elsewhere never lock it out (OWASP's device cookies), and after ARGV[5] of its own it is an
-- unknown device again.

local mode = ARGV[1]
local now = tonumber(ARGV[8])

local function give_back(key)
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end

local function count(key, window)
  if redis.call('INCR', key) == 1 then
    redis.call('EXPIRE', key, window)
  end
end

if mode == 'attempt' then
  local lifetime = tonumber(ARGV[6])
  for i = 9, #ARGV do
    local seen = redis.call('HGET', KEYS[3], 's:' .. ARGV[i])
    if seen and now - tonumber(seen) < lifetime then
      if redis.call('HINCRBY', KEYS[3], 'f:' .. ARGV[i], 1) <= tonumber(ARGV[5]) then
        return {1, i - 8}
      end
    end
    if seen then
      -- Too many failures of its own, or too old: the device has lost its privilege.
      redis.call('HDEL', KEYS[3], 's:' .. ARGV[i], 'f:' .. ARGV[i])
    end
  end
  for at, limit in ipairs({tonumber(ARGV[2]), tonumber(ARGV[3])}) do
    if tonumber(redis.call('GET', KEYS[at]) or '0') >= limit then
      local ttl = redis.call('TTL', KEYS[at])
      return {2, ttl > 0 and ttl or tonumber(ARGV[4])}
    end
  end
  count(KEYS[1], ARGV[4])
  count(KEYS[2], ARGV[4])
  return {0, 0}
end

if mode == 'give_back' then
  if ARGV[9] then
    if tonumber(redis.call('HGET', KEYS[3], 'f:' .. ARGV[9]) or '0') > 0 then
      redis.call('HINCRBY', KEYS[3], 'f:' .. ARGV[9], -1)
    end
  else
    give_back(KEYS[1])
    give_back(KEYS[2])
  end
  return {0, 0}
end

local digest = ARGV[9]
if mode == 'unknown_ok' then
  -- The owner got in: a success resets the account's counts (known devices never touch them).
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('HSET', KEYS[3], 's:' .. digest, now)
redis.call('HDEL', KEYS[3], 'f:' .. digest)
if mode == 'unknown_ok' then
  -- Keep the devices used last, forget expired ones: a client that never keeps its cookie cannot grow the
  -- hash without end.
  local fields = redis.call('HGETALL', KEYS[3])
  local kept, oldest, oldest_at = 0, nil, nil
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 's:' then
      local name, at = string.sub(fields[i], 3), tonumber(fields[i + 1])
      if now - at >= tonumber(ARGV[6]) then
        redis.call('HDEL', KEYS[3], fields[i], 'f:' .. name)
      else
        kept = kept + 1
        if oldest_at == nil or at < oldest_at then
          oldest, oldest_at = name, at
        end
      end
    end
  end
  if kept > tonumber(ARGV[7]) then
    redis.call('HDEL', KEYS[3], 's:' .. oldest, 'f:' .. oldest)
  end
end
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return {0, 0}
