-- +goose Up
-- hold_until: a writer that publishes its own messages right after its
-- commit (the scheduler's bursts) holds them from the relays until then;
-- NULL for every other message. Relays skip held messages, and take them
-- as any other once the hold passes or the writer releases them.
ALTER TABLE outbox ADD COLUMN hold_until timestamptz;

-- +goose Down
ALTER TABLE outbox DROP COLUMN hold_until;
