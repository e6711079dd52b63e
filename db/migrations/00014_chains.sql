-- +goose Up
-- Incremental and differential backups (package chunkstore). A chunked
-- backup's object is its chunk index; backup_type says what it stored:
-- every chunk (full), the chunks new since its parent, the previous backup
-- of its chain (incremental), or since its base, the chain's full
-- (differential). depends_on is every earlier backup whose packs it may
-- use: its parent's depends_on and its parent, decided by the control
-- plane when it queues the run, so retention and deletion keep them while
-- it is kept. new_bytes is the dump bytes it stored that its parent did
-- not have. Single-object backups (a job of type full) keep chunked false.
ALTER TABLE backup_history
    ADD COLUMN chunked     boolean NOT NULL DEFAULT false,
    ADD COLUMN backup_type text    NOT NULL DEFAULT 'full' CHECK (backup_type IN ('full', 'incremental', 'differential')),
    ADD COLUMN parent_id   uuid,
    ADD COLUMN base_id     uuid,
    ADD COLUMN depends_on  uuid[]  NOT NULL DEFAULT '{}',
    ADD COLUMN new_bytes   bigint;
CREATE INDEX backup_history_depends_on_idx ON backup_history USING gin (depends_on);
-- The newest chunked backup of a job is looked up for every run.
CREATE INDEX backup_history_chain_idx ON backup_history (backup_job_id, completed_at DESC) WHERE chunked AND status = 'success';

-- +goose Down
DROP INDEX backup_history_chain_idx;
DROP INDEX backup_history_depends_on_idx;
ALTER TABLE backup_history DROP COLUMN new_bytes, DROP COLUMN depends_on, DROP COLUMN base_id, DROP COLUMN parent_id,
    DROP COLUMN backup_type, DROP COLUMN chunked;
