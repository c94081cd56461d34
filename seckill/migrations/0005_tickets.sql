-- Purchase tickets (issue 16): an event may require a ticket (GET /seckill/events/{id}/ticket, an HMAC made
-- with the event's secret, which Redis hands out only once the sale has started) on every purchase, and may
-- spread the first arrivals over admission_spread_ms. Existing events keep selling without tickets; the API
-- creates new events with ticket_required true unless told otherwise.
ALTER TABLE seckill_events
    ADD COLUMN ticket_required boolean NOT NULL DEFAULT false,
    ADD COLUMN admission_spread_ms integer NOT NULL DEFAULT 0
        CHECK (admission_spread_ms BETWEEN 0 AND 600000);
