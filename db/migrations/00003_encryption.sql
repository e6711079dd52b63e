-- +goose Up
-- Encrypted backups (age): each encrypted job has its own X25519 identity,
-- stored sealed by the vault (bound to backup_jobs/age_identity/<id>); its
-- public recipient and any extra recipients the user adds are public. The
-- export is the identity encrypted with the user's encryption password
-- (age scrypt): what GET …/encryption-key returns.
ALTER TABLE backup_jobs
    ADD COLUMN age_identity_enc bytea,
    ADD COLUMN age_recipient    text,
    ADD COLUMN age_recipients   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN age_key_export   bytea;

-- +goose Down
ALTER TABLE backup_jobs
    DROP COLUMN age_identity_enc,
    DROP COLUMN age_recipient,
    DROP COLUMN age_recipients,
    DROP COLUMN age_key_export;
