-- Move one inbox entry that PostgreSQL cannot store (or that cannot be read) to the dead letters, in one step:
-- it is pending in the inbox or in the dead letters, never both or neither.
-- KEYS[1] inbox stream ({cs}:inbox), KEYS[2] dead-letter stream ({cs}:inbox:dead)
-- ARGV[1] consumer group, ARGV[2] inbox entry id, ARGV[3] reason, ARGV[4] dead letters kept (oldest trimmed)
-- Returns the dead letter's id, or false when the entry is no longer pending (another worker handled it)
-- Retry: safe; a repeated call finds the entry no longer pending and changes nothing.

if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return false
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if #found == 0 then
  return false
end
local fields = found[1][2]
table.insert(fields, '_src')
table.insert(fields, ARGV[2])
table.insert(fields, '_reason')
table.insert(fields, ARGV[3])
local dead_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[2])
return dead_id
