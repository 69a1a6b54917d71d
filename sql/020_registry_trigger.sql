-- =============================================================================================
-- TRIGGER mc_storage_before_insert  BEFORE INSERT ON mc_storage
--
-- Keeps the key registry right for every row, whether it came from a procedure or from a
-- direct INSERT:
--   * lower-cases `op` ('SET' is a set), so the binlog carries the canonical spelling;
--   * sets NEW.problem = mc_row_problem(...); a row with a problem is logged as is (mcrepl
--     dead-letters it) and does not touch the registry;
--   * op 'set'    upserts mc_stored_keys (namespace, expiry, value length and MD5);
--   * op 'delete' removes the key from mc_stored_keys;
--   * op 'flush'  changes nothing (flush_namespace() already wrote the deletes).
-- One exception, flush_namespace()'s own delete rows: a row whose op is exactly 'delete' and
-- whose flush_id equals the session variable @mc_flush_id is left as it is (no lower-casing,
-- no validation, `problem` stays NULL, no registry write). flush_namespace() sets @mc_flush_id
-- only while it writes its chunks, and removes each chunk's keys from mc_stored_keys itself in
-- one set-based DELETE; the keys come from the registry, so they were valid when set. Doing
-- that per row here made a large flush slow (docs/decisions/0012-flush-bypasses-the-trigger.md).
-- A session that sets @mc_flush_id by hand skips only this for its own delete rows: the tailer
-- still checks every key, and a registry row left behind costs a redundant delete later.
-- Writes: mc_stored_keys. Raises nothing: refusing is the procedures' job.
-- The registry write and the binlog row commit or roll back together (BLACKHOLE is not flagged
-- as non-transactional, so its rows go through the transaction cache).
-- =============================================================================================

DROP TRIGGER IF EXISTS mc_storage_before_insert;
DELIMITER $$
CREATE TRIGGER mc_storage_before_insert BEFORE INSERT ON mc_storage
FOR EACH ROW
body: BEGIN
  -- flush_namespace()'s own delete rows (see above). A binary comparison: exactly 'delete', not
  -- 'DELETE' or 'delete ', so nothing skipped here needed the LOWER() below.
  IF NEW.flush_id IS NOT NULL AND NEW.flush_id = @mc_flush_id AND CAST(NEW.op AS BINARY) = 'delete' THEN
    LEAVE body;
  END IF;
  SET NEW.op = LOWER(NEW.op);
  SET NEW.problem = mc_row_problem(NEW.ns_id, NEW.mc_key, NEW.mc_value, NEW.expire, NEW.op, NEW.flush_id);
  IF NEW.problem IS NULL THEN
    IF NEW.op = 'set' THEN
      INSERT INTO mc_stored_keys (mc_key, ns_id, created, updated, expire, expires_at, value_len, value_md5)
      VALUES (NEW.mc_key, NEW.ns_id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, NEW.expire,
              CASE WHEN NEW.expire = 0 THEN NULL
                   WHEN NEW.expire <= 2592000 THEN UNIX_TIMESTAMP() + NEW.expire
                   ELSE NEW.expire END,
              LENGTH(NEW.mc_value), UNHEX(MD5(NEW.mc_value)))
      ON DUPLICATE KEY UPDATE
        ns_id = VALUES(ns_id), updated = VALUES(updated), expire = VALUES(expire),
        expires_at = VALUES(expires_at), value_len = VALUES(value_len), value_md5 = VALUES(value_md5);
    ELSEIF NEW.op = 'delete' THEN
      DELETE FROM mc_stored_keys WHERE mc_key = NEW.mc_key;
    END IF;
  END IF;
END $$
DELIMITER ;
