-- KEYS[1] the revoked-marker of the access token (sso.keys.revoked_token)
-- KEYS[2] the revocation journal of the token's user's shard
-- ARGV[1] how long the marker stays (ms): as long as the token could still be accepted
-- ARGV[2] the token id (jti)
-- ARGV[3] how long journal entries are kept (ms)
-- ARGV[4] the changes channel
-- Returns 1; the revocation is announced ("j:<jti>") by this call.
-- Retry: safe; the marker is set again and the token announced again, which changes nothing.

redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
announce(2, ARGV[3], ARGV[4], {'j:' .. ARGV[2]})
return 1
