-- Issue 17: the secrets of each group, SQLite's spelling (mysql/0002_group_secrets.sql is
-- the same for MySQL/MariaDB). `ajp_secret` is the shared secret of the AJP connection
-- between the group's splitter (mod_jk's `secret`) and its web VMs (Tomcat's AJP
-- connector, `secretRequired`): 64 hex digits from the OS's random source, made by the
-- first conductor that boots a VM of the group, never changed, carried in the user data
-- of the group's VMs only (doc/security.md). Rows are kept when a template is destroyed:
-- a template made again under the same name finds its VMs' secret.
CREATE TABLE group_secrets (
    group_name TEXT NOT NULL PRIMARY KEY,
    ajp_secret TEXT NOT NULL
) STRICT;
