-- name: LockSecrets :exec
-- Serializes `rahatback keys rotate` and `keys rewrap` on one database until
-- the transaction ends.
SELECT pg_advisory_xact_lock(hashtext('rahatback.vault.secrets'));

-- Each secret column sealed by the vault has a list query (id, ciphertext;
-- the rows stay locked until the transaction ends, so an API edit cannot be
-- overwritten by a rewrap) and an update. controlplane/keys.go names them in
-- its table of secret columns. A rewrap does not change the secret, so
-- updated_at stays.

-- name: ListSecretDatabasePasswords :many
SELECT id, password_enc AS ciphertext FROM databases
WHERE password_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapDatabasePassword :exec
UPDATE databases SET password_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);

-- name: ListSecretJobAgeIdentities :many
SELECT id, age_identity_enc AS ciphertext FROM backup_jobs
WHERE age_identity_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapJobAgeIdentity :exec
UPDATE backup_jobs SET age_identity_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);

-- name: ListSecretS3Secrets :many
SELECT id, s3_secret_enc AS ciphertext FROM cloud_storages
WHERE s3_secret_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapS3Secret :exec
UPDATE cloud_storages SET s3_secret_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);

-- name: ListSecretDriveTokens :many
SELECT id, gd_refresh_token_enc AS ciphertext FROM cloud_storages
WHERE gd_refresh_token_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapDriveToken :exec
UPDATE cloud_storages SET gd_refresh_token_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);

-- name: ListSecretChannelURLs :many
SELECT id, url_enc AS ciphertext FROM notification_channels
WHERE url_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapChannelURL :exec
UPDATE notification_channels SET url_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);

-- name: ListSecretChannelSecrets :many
SELECT id, secret_enc AS ciphertext FROM notification_channels
WHERE secret_enc IS NOT NULL ORDER BY id FOR UPDATE;

-- name: RewrapChannelSecret :exec
UPDATE notification_channels SET secret_enc = sqlc.arg(ciphertext) WHERE id = sqlc.arg(id);
