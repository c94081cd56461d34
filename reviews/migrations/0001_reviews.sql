CREATE TABLE reviews (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL,
    user_id text NOT NULL,
    username text NOT NULL,
    rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- One review per buyer and product.
    UNIQUE (sku, user_id)
);

-- Newest first within a product: the keyset pagination walks this index.
CREATE INDEX reviews_sku_newest ON reviews (sku, id DESC);

-- Kept in the same transaction as each review, so a page never aggregates the whole product.
CREATE TABLE review_summaries (
    sku text PRIMARY KEY,
    count integer NOT NULL,
    total bigint NOT NULL
);
