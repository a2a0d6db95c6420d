-- The first schema of the autoscaler database, MySQL/MariaDB's spelling
-- (doc/ha.md#schema). sqlite/0001_initial.sql is the same schema for SQLite: keep the two
-- in step (the test `store::tests::both_dialects_have_the_same_migrations` checks the
-- versions).
--
-- Times are integer milliseconds since the Unix epoch (UTC), from the database's clock
-- where the database decides them (leases, services). Names are utf8mb4_bin: they
-- compare byte for byte, as everywhere else in autoscaler (routing keys, VM metadata),
-- not case-insensitively as the server's default collation would. InnoDB: row locks and
-- transactions, which the lease fencing needs. 255 characters of utf8mb4 fit InnoDB's
-- 3072-byte key limit, also two of them in pending_removals' key. VARCHAR and not TEXT
-- for the longer strings too: sqlx's Any driver reads MySQL's TEXT as bytes, not text
-- (the store checks the lengths before it writes). SMALLINT and not TINYINT for flags:
-- the Any driver does not read TINYINT.

CREATE TABLE templates (
    name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    source VARCHAR(4096) NOT NULL,
    template VARCHAR(8000) NOT NULL,
    instantiated_at BIGINT NOT NULL,
    destroying SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE group_leases (
    group_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    owner VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    expires_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (group_name),
    INDEX group_leases_owner (owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE group_state (
    group_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    pool_generation BIGINT NOT NULL,
    PRIMARY KEY (group_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE pending_removals (
    group_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    vm_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    requested_at BIGINT NOT NULL,
    drain_generation BIGINT,
    drain_since BIGINT,
    PRIMARY KEY (group_name, vm_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE services (
    host VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (host)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE imports (
    name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    imported_at BIGINT NOT NULL,
    items BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
