-- Fencing: the one row says which leader may write. A leader claims it with its epoch
-- (the etcd revision at which it won; a counter without etcd) only if that epoch is
-- newer, and every write transaction first checks that the epoch is still its own.
-- `revision` counts committed write transactions (followers read it to know the store
-- changed).
CREATE TABLE leadership (
    id       INTEGER PRIMARY KEY NOT NULL,
    epoch    BIGINT NOT NULL,
    holder   TEXT NOT NULL,
    revision BIGINT NOT NULL
);

INSERT INTO leadership (id, epoch, holder, revision) VALUES (1, 0, '', 0);
