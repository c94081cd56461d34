-- A shopper's orders, newest first (GET /seckill/orders?limit=&after=): the keyset (reserved_at, order_id) of
-- one user read in index order, one index range per page whatever the page's depth.
CREATE INDEX IF NOT EXISTS seckill_orders_by_user ON seckill_orders (user_id, reserved_at DESC, order_id DESC);
