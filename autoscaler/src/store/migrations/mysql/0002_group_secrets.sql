-- Issue 17: the secrets of each group, MySQL/MariaDB's spelling (see
-- sqlite/0002_group_secrets.sql for what they are).
CREATE TABLE group_secrets (
    group_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ajp_secret VARCHAR(128) NOT NULL,
    PRIMARY KEY (group_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
