-- A give-back whose event Redis no longer knows (its keys deleted, expired or lost with Redis data) is set
-- aside instead of retried at the head of the sweeper's queue forever: 'set_aside' (seckill/timeouts.py). The
-- order stays cancelled; its stock and quota were not given back to Redis by the sweeper.
ALTER TABLE seckill_orders DROP CONSTRAINT seckill_orders_giveback_check;
ALTER TABLE seckill_orders ADD CONSTRAINT seckill_orders_giveback_check
    CHECK (giveback IN ('pending', 'done', 'set_aside')) NOT VALID;
ALTER TABLE seckill_orders VALIDATE CONSTRAINT seckill_orders_giveback_check;
CREATE INDEX seckill_orders_giveback_set_aside ON seckill_orders (event_id) WHERE giveback = 'set_aside';
