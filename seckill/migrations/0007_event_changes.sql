-- Admin changes of sale events (issue 17), an outbox: each creation or PATCH is recorded here in the same
-- transaction as the event's row, committed, then applied to Redis by its id (prewarm.lua and adjust.lua
-- remember the ids each bucket applied, so a second apply changes nothing) and marked applied. A change that
-- an API process left unapplied (it died, or Redis was down) is finished by the workers' outbox loop.
CREATE TABLE seckill_event_changes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id bigint NOT NULL REFERENCES seckill_events (id),
    kind text NOT NULL CHECK (kind IN ('create', 'adjust')),
    -- create: the stock put on sale at creation; adjust: the stock added (0 for none).
    stock integer NOT NULL CHECK (stock >= 0),
    -- adjust: the new end (NULL to keep it); create: the end asked for (the warm-up reads the event's row).
    ends_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    applied_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200)
);

CREATE INDEX seckill_event_changes_pending ON seckill_event_changes (event_id, id) WHERE applied_at IS NULL;
CREATE UNIQUE INDEX seckill_event_changes_create_key ON seckill_event_changes (idempotency_key)
    WHERE kind = 'create';
CREATE UNIQUE INDEX seckill_event_changes_adjust_key ON seckill_event_changes (event_id, idempotency_key)
    WHERE kind = 'adjust';
