-- +goose Up
CREATE TABLE cloud_storages (
    id                   uuid        PRIMARY KEY,
    user_id              uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                 text        NOT NULL,
    storage_type         text        NOT NULL CHECK (storage_type IN ('s3', 'google_drive')),
    is_default           boolean     NOT NULL DEFAULT false,
    s3_access_key_id     text,
    -- vault ciphertexts bound to (cloud_storages, <column>, id)
    s3_secret_enc        bytea,
    s3_region            text,
    s3_bucket            text,
    s3_endpoint          text,
    s3_force_path_style  boolean     NOT NULL DEFAULT false,
    s3_prefix            text,
    gd_folder_id         text,
    gd_refresh_token_enc bytea,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cloud_storages_user_idx ON cloud_storages (user_id, created_at);
-- One default storage per type per user.
CREATE UNIQUE INDEX cloud_storages_one_default ON cloud_storages (user_id, storage_type) WHERE is_default;

ALTER TABLE backup_jobs
    ADD CONSTRAINT backup_jobs_cloud_storage_fk FOREIGN KEY (cloud_storage_id) REFERENCES cloud_storages (id) ON DELETE RESTRICT;

-- OAuth state of a Google Drive connection in progress (one-time, short-lived).
CREATE TABLE oauth_states (
    state_hash bytea       PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    folder_id  text,
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE oauth_states;
ALTER TABLE backup_jobs DROP CONSTRAINT backup_jobs_cloud_storage_fk;
DROP TABLE cloud_storages;
