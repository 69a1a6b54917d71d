-- =============================================================================================
-- mcrepl schema: tables
--
-- Install with `mcrepl schema install` (runs every file of sql/ in order inside the configured
-- database), or with the mysql client: `mysql memcached < sql/001_tables.sql` and so on.
-- Every file is idempotent: re-running it upgrades procedures and leaves data alone.
--
-- mc_settings      name/value settings: max_item_bytes (item size limit, read by the validation
--                  function); flush_chunk_keys (optional, keys per flush_namespace() chunk).
-- mc_namespaces    namespaces, as in the original design: (ns_id, ns_name).
-- mc_storage       ENGINE=BLACKHOLE: an append-only log of cache operations. Rows are stored
--                  nowhere; they exist only in the binlog, which mcrepl tails. Only INSERT is
--                  ever logged for BLACKHOLE tables in ROW format, so every operation is an
--                  inserted row with an `op`: 'set', 'delete' or 'flush' (a marker).
--                  mc_key is wider than memcached allows on purpose: a bad key inserted directly
--                  must reach the binlog so mcrepl can dead-letter it with its reason.
--                  `problem` is filled by the trigger when the row is invalid.
-- mc_stored_keys   the key registry (InnoDB), kept by the trigger on mc_storage: one row per live
--                  key, with the namespace that last wrote it. Used by flush and verify. Rows
--                  whose expiry passed are removed by mc_sweep_expired() (040_registry_expiry.sql),
--                  which the active tailer calls; the index on expires_at is for it.
-- mc_flushes       one row per namespace flush request; its id and random token travel in the
--                  flush marker (the token keeps flush ids unique even after a reinstall).
-- =============================================================================================

CREATE TABLE IF NOT EXISTS mc_settings (
  name  VARCHAR(64)  NOT NULL PRIMARY KEY,
  value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- memcached's default item size (-I 1m). Keep it equal to the smallest -I of your servers.
INSERT IGNORE INTO mc_settings (name, value) VALUES ('max_item_bytes', '1048576');

CREATE TABLE IF NOT EXISTS mc_namespaces (
  ns_id   INT         NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ns_name VARCHAR(64) NOT NULL,
  created TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
  UNIQUE KEY ns_name (ns_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS mc_storage (
  ns_id    INT             NULL,
  mc_key   VARBINARY(2048) NULL,
  mc_value LONGBLOB        NULL,
  expire   BIGINT          NULL DEFAULT 0,
  op       VARCHAR(16)     NULL DEFAULT 'set',
  flush_id BIGINT UNSIGNED NULL,
  problem  VARCHAR(255)    NULL
) ENGINE=BLACKHOLE DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS mc_stored_keys (
  mc_key     VARBINARY(250) NOT NULL PRIMARY KEY,
  ns_id      INT            NOT NULL,
  created    TIMESTAMP      NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated    TIMESTAMP      NOT NULL DEFAULT CURRENT_TIMESTAMP,
  expire     BIGINT         NOT NULL DEFAULT 0,
  expires_at BIGINT         NULL COMMENT 'unix seconds; NULL = never',
  value_len  INT UNSIGNED   NOT NULL,
  value_md5  BINARY(16)     NOT NULL,
  KEY ns_key (ns_id, mc_key),
  KEY expires_at (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS mc_flushes (
  flush_id     BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  token        CHAR(36)        NOT NULL,
  ns_id        INT             NOT NULL,
  requested_at TIMESTAMP       NOT NULL DEFAULT CURRENT_TIMESTAMP,
  key_count    BIGINT UNSIGNED NOT NULL DEFAULT 0,
  KEY ns_id (ns_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- ---------------------------------------------------------------------------------------------
-- Upgrades: CREATE TABLE IF NOT EXISTS leaves a table made by an older version as it was, so
-- what later versions added to a table is added here to installs that lack it. Each step looks
-- in information_schema first (MySQL 8 has no ADD KEY IF NOT EXISTS), so re-running is a no-op.
-- The procedure exists only while this file runs.
--   mc_stored_keys.expires_at index   for mc_sweep_expired() (docs/decisions/0018-registry-expiry.md).
--                                     InnoDB adds it in place, without blocking writes.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS mc_upgrade_tables;
DELIMITER $$
CREATE PROCEDURE mc_upgrade_tables()
MODIFIES SQL DATA
BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.statistics
                 WHERE table_schema = DATABASE() AND table_name = 'mc_stored_keys' AND index_name = 'expires_at') THEN
    ALTER TABLE mc_stored_keys ADD KEY expires_at (expires_at);
  END IF;
END $$
DELIMITER ;
CALL mc_upgrade_tables();
DROP PROCEDURE mc_upgrade_tables;
