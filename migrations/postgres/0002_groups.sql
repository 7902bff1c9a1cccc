-- Explicit groups (created or changed through /v2/groups) and their versions. A
-- group version holds the group's whole subtree as JSON, so a rollback can bring back
-- apps the change removed.
CREATE TABLE groups (
    id   TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);

CREATE TABLE group_versions (
    group_id TEXT NOT NULL,
    version  TEXT NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (group_id, version)
);
