-- Cache a product's summary (its first page, average and count, served while reviews is shed) unless the one
-- cached counts more reviews: each review renders the page after its COMMIT, and of two concurrent ones the
-- first to render may be the last to write (a CI run served 39 of 40 reviews that way).
-- KEYS[1] the product's summary (reviews:{sku}:summary)
-- ARGV[1] the summary JSON, ARGV[2] its review count (a product's count only grows), ARGV[3] time to live, ms
-- Returns 1 when written, 0 when the cached summary counts more reviews (kept as it is, TTL included)
-- Retry: safe; the same summary written again only renews its TTL.

local cached = redis.call('GET', KEYS[1])
if cached then
  local ok, body = pcall(cjson.decode, cached)
  if ok and type(body) == 'table' and tonumber(body['count']) and tonumber(body['count']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
