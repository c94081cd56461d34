-- Hot-SKU stock buckets (seckill/buckets.py): an event's stock split over N Redis buckets, and each order's
-- bucket (where its stock came from) and home bucket (where its user's count lives), for the give-back.
ALTER TABLE seckill_events ADD COLUMN buckets smallint NOT NULL DEFAULT 1 CHECK (buckets BETWEEN 1 AND 64);
ALTER TABLE seckill_orders ADD COLUMN bucket smallint NOT NULL DEFAULT 0;
ALTER TABLE seckill_orders ADD COLUMN home smallint NOT NULL DEFAULT 0;
