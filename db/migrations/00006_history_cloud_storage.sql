-- +goose Up
-- The cloud storage a backup went to, so it stays reachable when its job
-- moves to another storage.
ALTER TABLE backup_history ADD COLUMN cloud_storage_id uuid;

-- +goose Down
ALTER TABLE backup_history DROP COLUMN cloud_storage_id;
