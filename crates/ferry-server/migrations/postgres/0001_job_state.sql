-- ferry job state, version 1 (PostgreSQL). Keep in step with ../sqlite/0001_job_state.sql.
-- Times are milliseconds since the Unix epoch, from the host's clock.

CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,          -- the workflow, JSON
    bytes BIGINT NOT NULL
);

CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,          -- target and priority, JSON (items live in batch_items)
    parallelism BIGINT NOT NULL,
    status TEXT NOT NULL,        -- pending, running, completed, cancelled
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT
);

CREATE TABLE batch_items (
    batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    input TEXT NOT NULL,         -- JSON
    status TEXT NOT NULL,        -- pending, running, completed, failed, cancelled, interrupted
    result TEXT,                 -- JSON
    error TEXT,                  -- JSON error body
    owner TEXT,                  -- the host running it
    lease_until BIGINT NOT NULL DEFAULT 0,
    epoch BIGINT NOT NULL DEFAULT 0,        -- claims so far: fences a host whose lease ran out
    completions BIGINT NOT NULL DEFAULT 0,  -- results stored (never more than one)
    finished_by TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, idx)
);
CREATE INDEX batch_items_status ON batch_items (status, batch_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,      -- the workflow as it was when the session started, JSON
    input TEXT NOT NULL,         -- JSON
    view TEXT NOT NULL,          -- the session's view (status, steps), JSON
    progress TEXT NOT NULL,      -- finished steps' outputs, JSON: where a resume starts
    status TEXT NOT NULL,
    control TEXT,                -- a control asked on a host that does not run it
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    epoch BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT
);

-- Results' attachments (images): `b/<batch>/<index>`, `s/<session>/<step>` and
-- `s/<session>` (the result).
CREATE TABLE attachments (
    owner TEXT NOT NULL,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (owner, idx)
);

CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,   -- method, path and a hash of the body
    status BIGINT,               -- NULL while the first request runs
    content_type TEXT,
    body BYTEA,
    created_ms BIGINT NOT NULL
);
