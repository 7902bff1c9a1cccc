-- Jobs (definition and scheduler status as JSON) and their runs. A run is keyed by
-- (job, due time, attempt): a due time is recorded once, which is what keeps runs
-- exactly-once across crashes.
CREATE TABLE jobs (
    name TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);

CREATE TABLE job_runs (
    job     TEXT NOT NULL,
    due     BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (job, due, attempt)
);
