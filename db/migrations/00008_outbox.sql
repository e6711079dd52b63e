-- +goose Up
-- The outbox: what the control plane publishes (its events, and the
-- commands that follow them), written in the transaction of the state it
-- describes, then relayed to JetStream in id order and deleted once
-- JetStream has stored it. Commands hold secrets only sealed to their agent.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    subject    text NOT NULL,
    msg_id     text NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE outbox;
