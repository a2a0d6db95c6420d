-- The first schema of the autoscaler database, SQLite's spelling (doc/ha.md#schema).
-- mysql/0001_initial.sql is the same schema for MySQL/MariaDB: keep the two in step
-- (the test `store::tests::both_dialects_have_the_same_migrations` checks the versions).
--
-- Times are integer milliseconds since the Unix epoch (UTC), from the database's clock
-- where the database decides them (leases, services). Names compare byte for byte, as
-- everywhere else in autoscaler (routing keys, VM metadata). STRICT: a value of the
-- wrong type is an error, as it is on MySQL.

-- The active templates. `template` is the template's JSON (the keys of the template
-- file); `destroying` is 0 or 1: destroy was asked and the group's owner carries it out.
CREATE TABLE templates (
    name TEXT NOT NULL PRIMARY KEY,
    source TEXT NOT NULL,
    template TEXT NOT NULL,
    instantiated_at INTEGER NOT NULL,
    destroying INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Who owns each group. `owner` is a conductor's [DEFAULT] host, NULL once released;
-- `generation` grows by one at every acquisition and is never reset (rows are never
-- deleted), so a write carrying an older generation is refused (fencing).
CREATE TABLE group_leases (
    group_name TEXT NOT NULL PRIMARY KEY,
    owner TEXT,
    expires_at INTEGER NOT NULL,
    generation INTEGER NOT NULL
) STRICT;
CREATE INDEX group_leases_owner ON group_leases (owner);

-- The owner's decisions about a group that must outlive a conductor: the last pool
-- generation sent to its splitter (the splitter ignores older ones).
CREATE TABLE group_state (
    group_name TEXT NOT NULL PRIMARY KEY,
    pool_generation INTEGER NOT NULL
) STRICT;

-- Web VMs the operator asked to remove: drained, then deleted. `drain_generation` and
-- `drain_since` are set once a pool update carrying the VM as draining was sent.
CREATE TABLE pending_removals (
    group_name TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    drain_generation INTEGER,
    drain_since INTEGER,
    PRIMARY KEY (group_name, vm_name)
) STRICT;

-- One row per conductor ([DEFAULT] host): up while `last_seen` is recent.
CREATE TABLE services (
    host TEXT NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) STRICT;

-- One-time imports done by `autoscaler-manage db sync` (the state_path JSON files).
CREATE TABLE imports (
    name TEXT NOT NULL PRIMARY KEY,
    imported_at INTEGER NOT NULL,
    items INTEGER NOT NULL
) STRICT;
