CREATE TABLE seckill_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL,
    title text NOT NULL,
    price bigint NOT NULL CHECK (price >= 0),
    -- Stock ever put on sale (creation plus every addition); reconciliation checks Redis against it.
    stock integer NOT NULL CHECK (stock >= 0),
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    per_user_limit integer NOT NULL DEFAULT 1 CHECK (per_user_limit >= 1),
    payment_timeout_s integer NOT NULL DEFAULT 900 CHECK (payment_timeout_s >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

CREATE TABLE seckill_orders (
    order_id uuid PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES seckill_events (id),
    user_id text NOT NULL,
    -- The user's n-th reservation in this event: a redelivered message can never add a second row for it.
    seq integer NOT NULL,
    -- The event's n-th reservation: lets reconciliation compare PostgreSQL with one moment of Redis
    -- (its unique index is also the index of the event's orders).
    rsv bigint NOT NULL,
    sku text NOT NULL,
    price bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending_payment'
        CHECK (status IN ('pending_payment', 'paid', 'cancelled')),
    reserved_at timestamptz NOT NULL,
    pay_by timestamptz NOT NULL,
    paid_at timestamptz,
    cancelled_at timestamptz,
    cancel_reason text CHECK (cancel_reason IN ('timeout', 'owner')),
    -- 'pending' from the cancelling UPDATE until Redis took the stock and quota back, then 'done'.
    giveback text CHECK (giveback IN ('pending', 'done')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, user_id, seq),
    UNIQUE (event_id, rsv),
    CHECK ((status = 'cancelled') = (giveback IS NOT NULL))
);

CREATE INDEX seckill_orders_due ON seckill_orders (pay_by) WHERE status = 'pending_payment';
CREATE INDEX seckill_orders_giveback ON seckill_orders (cancelled_at) WHERE giveback = 'pending';
CREATE INDEX seckill_orders_paid ON seckill_orders (user_id, sku) WHERE status = 'paid';
