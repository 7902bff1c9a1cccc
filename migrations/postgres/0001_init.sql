-- dromos schema v1 (PostgreSQL). Domain values are stored as JSON documents in `data`;
-- the other columns exist for lookups and ordering.
CREATE TABLE apps (
    id           TEXT PRIMARY KEY NOT NULL,
    version      TEXT NOT NULL,
    data         TEXT NOT NULL,
    last_failure TEXT
);

CREATE TABLE app_versions (
    app_id  TEXT NOT NULL,
    version TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (app_id, version)
);

CREATE TABLE tasks (
    id       TEXT PRIMARY KEY NOT NULL,
    app_id   TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    state    TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX tasks_app_id ON tasks (app_id);

CREATE TABLE deployments (
    id   TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);

CREATE TABLE agents (
    id   TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);
