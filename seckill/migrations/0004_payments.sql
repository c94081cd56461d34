-- Payments as the payment provider notified them (POST /seckill/payments/callback), one row per payment id:
-- a notification sent again finds its row and gets the same answer. 'paid' paid the order; 'refund_due' took
-- money the shop does not keep (the order was cancelled first, was paid already, or the amount was not its
-- price): `peak seckill refunds` lists those until ops mark them refunded.
CREATE TABLE seckill_payments (
    payment_id text PRIMARY KEY,
    order_id uuid NOT NULL,
    amount bigint NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('paid', 'refund_due')),
    reason text CHECK (reason IN ('order_cancelled', 'order_paid', 'amount_mismatch')),
    received_at timestamptz NOT NULL DEFAULT now(),
    refunded_at timestamptz,
    CHECK ((outcome = 'refund_due') = (reason IS NOT NULL)),
    CHECK (refunded_at IS NULL OR outcome = 'refund_due')
);

-- An order is paid by one payment at most.
CREATE UNIQUE INDEX seckill_payments_paid ON seckill_payments (order_id) WHERE outcome = 'paid';
CREATE INDEX seckill_payments_refunds ON seckill_payments (received_at)
    WHERE outcome = 'refund_due' AND refunded_at IS NULL;
