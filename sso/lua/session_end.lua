-- KEYS[1] the user's session index
-- ARGV[1] session key prefix (a session id appended gives its hash)
-- ARGV[2] what to end: "one" (the session ARGV[3]), "all", or "others" (all but ARGV[3])
-- ARGV[3] a session id, or ""
-- Returns the ids of the sessions that were live and are now ended
-- Safe to run twice; a second run answers only what it ended, so ids ended by a call whose answer was lost
-- are not announced by the caller.

local ended = {}
local ids
if ARGV[2] == 'one' then
  ids = {ARGV[3]}
else
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
end
for _, id in ipairs(ids) do
  if not (ARGV[2] == 'others' and id == ARGV[3]) then
    if redis.call('DEL', ARGV[1] .. id) == 1 then
      ended[#ended + 1] = id
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
return ended
