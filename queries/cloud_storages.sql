-- name: CreateCloudStorage :one
INSERT INTO cloud_storages (id, user_id, name, storage_type, is_default, s3_access_key_id, s3_secret_enc,
    s3_region, s3_bucket, s3_endpoint, s3_force_path_style, s3_prefix, gd_folder_id, gd_refresh_token_enc)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING *;

-- name: GetCloudStorage :one
SELECT * FROM cloud_storages WHERE id = $1 AND user_id = $2;

-- name: ListCloudStorages :many
SELECT * FROM cloud_storages WHERE user_id = $1 ORDER BY created_at, id;

-- name: UpdateCloudStorage :one
UPDATE cloud_storages
SET name = $3, is_default = $4, s3_access_key_id = $5, s3_secret_enc = $6, s3_region = $7, s3_bucket = $8,
    s3_endpoint = $9, s3_force_path_style = $10, s3_prefix = $11, gd_folder_id = $12, gd_refresh_token_enc = $13,
    updated_at = now()
WHERE id = $1 AND user_id = $2
RETURNING *;

-- ClearDefaultCloudStorage unsets the default of a type, but for keep.
-- name: ClearDefaultCloudStorage :exec
UPDATE cloud_storages SET is_default = false
WHERE user_id = $1 AND storage_type = $2 AND is_default AND id <> sqlc.arg(keep);

-- name: DeleteCloudStorage :one
DELETE FROM cloud_storages WHERE id = $1 AND user_id = $2 RETURNING id;

-- name: CloudStorageInUse :one
SELECT EXISTS (SELECT 1 FROM backup_jobs WHERE cloud_storage_id = $1);

-- name: CreateOAuthState :exec
INSERT INTO oauth_states (state_hash, user_id, name, folder_id, expires_at) VALUES ($1, $2, $3, $4, $5);

-- name: TakeOAuthState :one
DELETE FROM oauth_states WHERE state_hash = $1 AND expires_at > now() RETURNING *;

-- StorageEndpoints lists every S3 storage with an endpoint: the control
-- plane checks them against its egress policy at start.
-- name: StorageEndpoints :many
SELECT id, user_id, name, s3_endpoint FROM cloud_storages
WHERE storage_type = 's3' AND s3_endpoint IS NOT NULL
ORDER BY created_at, id;
