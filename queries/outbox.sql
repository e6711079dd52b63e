-- name: OutboxAdd :exec
INSERT INTO outbox (subject, msg_id, data)
SELECT unnest(sqlc.arg(subjects)::text[]), unnest(sqlc.arg(msg_ids)::text[]), unnest(sqlc.arg(data)::bytea[]);

-- OutboxLead takes the relay's lead for the transaction: one relay at a
-- time publishes, so the stream gets the outbox in id order.
-- name: OutboxLead :one
SELECT pg_try_advisory_xact_lock(sqlc.arg(key)::bigint)::boolean AS lead;

-- OutboxNext is the head of the outbox, held messages left out.
-- name: OutboxNext :many
SELECT id, subject, msg_id, data FROM outbox
WHERE hold_until IS NULL OR hold_until <= now()
ORDER BY id LIMIT sqlc.arg(lim);

-- OutboxAddHeld is OutboxAdd of messages held from the relays for
-- hold_secs from now (not from the transaction's start); it returns their
-- ids with their message ids.
-- name: OutboxAddHeld :many
INSERT INTO outbox (subject, msg_id, data, hold_until)
SELECT unnest(sqlc.arg(subjects)::text[]), unnest(sqlc.arg(msg_ids)::text[]), unnest(sqlc.arg(data)::bytea[]),
       clock_timestamp() + make_interval(secs => sqlc.arg(hold_secs)::float8)
RETURNING id, msg_id;

-- OutboxRelease hands held messages to the relays.
-- name: OutboxRelease :exec
UPDATE outbox SET hold_until = NULL WHERE id = ANY(sqlc.arg(ids)::bigint[]);

-- name: OutboxDelete :exec
DELETE FROM outbox WHERE id = ANY(sqlc.arg(ids)::bigint[]);

-- name: OutboxPending :one
SELECT count(*) FROM outbox;

-- OutboxWaiting counts the messages waiting whose subject starts with
-- prefix (an agent's commands not relayed yet), but those of ids
-- (published already, their rows not deleted yet).
-- name: OutboxWaiting :one
SELECT count(*) FROM outbox
WHERE starts_with(subject, sqlc.arg(prefix)::text) AND NOT (id = ANY(sqlc.arg(published)::bigint[]));
