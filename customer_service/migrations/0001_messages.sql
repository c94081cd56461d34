CREATE TABLE cs_messages (
    -- Chosen when the message is accepted (also when it was queued while shed): moving a queued message
    -- twice inserts it once.
    id uuid PRIMARY KEY,
    -- The shopper whose conversation this message belongs to (also for an agent's reply).
    user_id text NOT NULL,
    author text NOT NULL CHECK (author IN ('shopper', 'agent')),
    author_name text NOT NULL,
    text text NOT NULL,
    reply_to uuid REFERENCES cs_messages (id),
    created_at timestamptz NOT NULL,
    -- True when it waited in the Redis stream because customer_service was shed.
    queued boolean NOT NULL DEFAULT false
);

CREATE INDEX cs_messages_conversation ON cs_messages (user_id, created_at, id);
