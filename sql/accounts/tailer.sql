-- =============================================================================================
-- The tailer's account: reads the binlog, checks the server, removes expired registry rows,
-- nothing else.
--   REPLICATION SLAVE    to stream the binlog (COM_BINLOG_DUMP)
--   REPLICATION CLIENT   SHOW BINARY LOGS / MASTER STATUS (MariaDB: BINLOG MONITOR, same grant)
--   SELECT on the schema column metadata of mc_storage and the preflight's checks
--   EXECUTE on mc_sweep_expired   the registry sweep (it runs as its definer: the account has no
--                        DELETE, and cannot write mc_storage or call any other procedure).
--                        A grant on one routine goes when the routine is dropped, so it is
--                        given again by every `mcrepl schema install` (after the SQL files).
-- Run by `mcrepl schema install` when mysql.tailer is configured; {{account}} and {{db}} are
-- replaced (quoted) by the installer, the password is passed separately, never in this text.
-- =============================================================================================
CREATE USER IF NOT EXISTS {{account}} IDENTIFIED BY {{password}};
ALTER USER {{account}} IDENTIFIED BY {{password}};
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {{account}};
GRANT SELECT ON {{db}}.* TO {{account}};
GRANT EXECUTE ON PROCEDURE {{db}}.mc_sweep_expired TO {{account}};
