-- name: CreateEnrollmentToken :exec
INSERT INTO enrollment_tokens (token_hash, user_id, expires_at)
VALUES ($1, $2, $3);

-- RedeemEnrollmentToken marks an unused, unexpired token used and returns its
-- owner; it returns no row for any other token, so each token works once.
-- name: RedeemEnrollmentToken :one
UPDATE enrollment_tokens SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING user_id;
