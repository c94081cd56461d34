-- KEYS[1] event meta hash, KEYS[2] user -> held orders hash, KEYS[3] user -> orders ever hash, KEYS[4] queued
-- orders hash, KEYS[5] dead-lettered orders hash, KEYS[6] set of returned order ids, KEYS[7] set of order ids whose
-- quota alone came back, KEYS[8] holds hash, KEYS[9] set of held order ids taken here (all of ONE bucket)
-- ARGV[1] "read", "disarm" or "write".
-- Returns for read: false if the event is not in Redis, else {this node's replication id, {meta field, value, ...},
-- {user, held, ...}, {user, seq, ...}, {queued id, user, ...}, {dead id, user, ...}, {returned ids},
-- {quota-returned ids}, {hold id, "user\nkey\nms\nseq", ...}, {taken ids}}
-- disarm: forget which node wrote the state ('gen'): purchases answer "repairing" until a write. Returns 1.
-- write: ARGV[2] the 'gen' read (a repair by someone else since changes it), ARGV[3..8] the stock, total,
-- reserved, number of returned ids, of quota-returned ids and of holds read; ARGV[9] new stock, ARGV[10] new
-- reserved, ARGV[11] new skipped (reservation numbers no order carries: lost with a primary), ARGV[12] 1 to
-- replace the users hash (else only raise), ARGV[13] number of user/held pairs U, ARGV[14] number of user/seq
-- pairs S, ARGV[15] number of ids to add to the returned set R; then U pairs, S pairs, R ids, then the ids to
-- add to the quota-returned set.
-- write Returns {"ok", replication id} | {"changed"} (the state moved since the read: read again) | {"not_found"}
-- Retry: safe; a repeated write finds 'gen' already set to this node's id (not the one read) and answers
-- {"changed"}, a repeated read or disarm changes nothing more. Written by seckill/rederive.py, which computes
-- the new values from this read and PostgreSQL.

local meta = KEYS[1]
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local mode = ARGV[1]

if redis.call('EXISTS', meta) == 0 then
  if mode == 'read' then
    return false
  end
  return {'not_found'}
end

if mode == 'read' then
  return {
    replid, redis.call('HGETALL', meta), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
    redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), redis.call('SMEMBERS', KEYS[6]),
    redis.call('SMEMBERS', KEYS[7]), redis.call('HGETALL', KEYS[8]), redis.call('SMEMBERS', KEYS[9]),
  }
end

if mode == 'disarm' then
  redis.call('HSET', meta, 'gen', '')
  return 1
end

local now = redis.call('HMGET', meta, 'gen', 'stock', 'total', 'reserved')
if (now[1] or '') ~= ARGV[2] or now[2] ~= ARGV[3] or now[3] ~= ARGV[4] or (now[4] or '0') ~= ARGV[5]
    or redis.call('SCARD', KEYS[6]) ~= tonumber(ARGV[6]) or redis.call('SCARD', KEYS[7]) ~= tonumber(ARGV[7])
    or redis.call('HLEN', KEYS[8]) ~= tonumber(ARGV[8]) then
  return {'changed'}
end
redis.call('HSET', meta, 'stock', ARGV[9], 'reserved', ARGV[10], 'skipped', ARGV[11])
if ARGV[12] == '1' then
  redis.call('DEL', KEYS[2])
end
local users, seqs, returned = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local at = 16
for _ = 1, users do
  redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1])
  at = at + 2
end
for _ = 1, seqs do
  redis.call('HSET', KEYS[3], ARGV[at], ARGV[at + 1])
  at = at + 2
end
for _ = 1, returned do
  redis.call('SADD', KEYS[6], ARGV[at])
  at = at + 1
end
while at <= #ARGV do
  redis.call('SADD', KEYS[7], ARGV[at])
  at = at + 1
end
-- Last: from here on this node sells the event again.
redis.call('HSET', meta, 'gen', replid)
return {'ok', replid}
