-- +goose Up
-- A run failed because its agent went silent ("agent lost") is provisional:
-- if the agent comes back and completes it, the completion wins.
ALTER TABLE backup_history ADD COLUMN lost boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE backup_history DROP COLUMN lost;
