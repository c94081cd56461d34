-- KEYS[1] the user's session index
-- KEYS[2] the revocation journal of the user's shard
-- KEYS[3] this call's answer (sso.keys.call_answer: named after an id no other call carries)
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- ARGV[2] what to end: "one" (the session ARGV[3]), "all", or "others" (all but ARGV[3])
-- ARGV[3] a session id, or ""
-- ARGV[4] how long journal entries are kept (ms)
-- ARGV[5] the changes channel
-- ARGV[6] how long this call's answer is kept (ms)
-- Returns the ids of the sessions that were live and are now ended; each is announced ("s:<id>") in the
-- journal and on the channel by this same call.
-- Retry: safe; a retried call gets the first run's answer from KEYS[3] (a second run would find nothing to end
-- and answer none: DELETE /sso/sessions/{sid} would say 404) and changes nothing.

local done = redis.call('GET', KEYS[3])
if done then
  return cjson.decode(done)
end
local ended = {}
local ids
if ARGV[2] == 'one' then
  ids = {ARGV[3]}
else
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local messages = {}
for _, id in ipairs(ids) do
  if not (ARGV[2] == 'others' and id == ARGV[3]) then
    if redis.call('DEL', ARGV[1] .. id) == 1 then
      ended[#ended + 1] = id
      messages[#messages + 1] = 's:' .. id
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
announce(2, ARGV[4], ARGV[5], messages)
-- cjson makes an empty table an object: "[]" is written for none.
redis.call('SET', KEYS[3], #ended == 0 and '[]' or cjson.encode(ended), 'PX', ARGV[6])
return ended
