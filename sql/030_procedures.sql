-- =============================================================================================
-- Procedures: the application's interface. Each validates with mc_row_problem() and refuses
-- bad input with SIGNAL SQLSTATE '45000' and a message naming the problem, so nothing invalid
-- reaches the binlog through them.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- set_key(f_ns_id, f_mc_key, f_mc_value, f_expire)
--   The original interface, same name, parameters and order. Types are widened so nothing is
--   silently truncated: keys and values are bytes (utf8mb4 text arrives as its UTF-8 bytes).
--   f_expire: 0 = never, 1..2592000 = seconds from the statement's time, larger = unix time
--   (which must still be in the future).
-- Writes: one 'set' row into mc_storage (the trigger upserts mc_stored_keys).
-- SIGNALs (45000): unknown/NULL namespace; NULL, empty, >250-byte key; key with a space or
--   control byte; NULL value; negative or >32-bit expire; expire above 2592000 that is a unix
--   time already past; key+value over the item size.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS set_key;
DELIMITER $$
CREATE PROCEDURE set_key(IN f_ns_id INT, IN f_mc_key LONGBLOB, IN f_mc_value LONGBLOB, IN f_expire BIGINT)
MODIFIES SQL DATA
BEGIN
  DECLARE v_problem VARCHAR(255) DEFAULT mc_row_problem(f_ns_id, f_mc_key, f_mc_value, f_expire, 'set', NULL);
  IF v_problem IS NOT NULL THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_problem;
  END IF;
  INSERT INTO mc_storage (ns_id, mc_key, mc_value, expire, op) VALUES (f_ns_id, f_mc_key, f_mc_value, f_expire, 'set');
END $$
DELIMITER ;

-- ---------------------------------------------------------------------------------------------
-- delete_key(f_ns_id, f_mc_key)
--   Removes the key from memcached in every data center, and from the registry.
-- Writes: one 'delete' row into mc_storage (the trigger deletes from mc_stored_keys).
-- SIGNALs (45000): unknown/NULL namespace; NULL, empty, >250-byte key, space/control byte.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS delete_key;
DELIMITER $$
CREATE PROCEDURE delete_key(IN f_ns_id INT, IN f_mc_key LONGBLOB)
MODIFIES SQL DATA
BEGIN
  DECLARE v_problem VARCHAR(255) DEFAULT mc_row_problem(f_ns_id, f_mc_key, NULL, 0, 'delete', NULL);
  IF v_problem IS NOT NULL THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_problem;
  END IF;
  INSERT INTO mc_storage (ns_id, mc_key, op) VALUES (f_ns_id, f_mc_key, 'delete');
END $$
DELIMITER ;

-- ---------------------------------------------------------------------------------------------
-- create_namespace(f_ns_id, f_ns_name)
--   Creates a namespace, or confirms one that already exists with exactly this id and name.
--   f_ns_id NULL picks the next free id. Returns one row: (ns_id, ns_name).
--   Ids are positive: mc_namespaces.ns_id is AUTO_INCREMENT, which would turn 0 into the next
--   free id (and report 0), and does not support negative values.
-- Writes: mc_namespaces.
-- SIGNALs (45000): empty or NULL name; id 0 or negative; name already used by another id; id
--   already used by another name.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS create_namespace;
DELIMITER $$
CREATE PROCEDURE create_namespace(IN f_ns_id INT, IN f_ns_name VARCHAR(64) CHARSET utf8mb4)
MODIFIES SQL DATA
BEGIN
  DECLARE v_id INT DEFAULT NULL;
  DECLARE v_name VARCHAR(64) DEFAULT NULL;
  DECLARE v_msg VARCHAR(255);
  IF f_ns_name IS NULL OR f_ns_name = '' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'namespace name is empty';
  END IF;
  IF f_ns_id <= 0 THEN
    SET v_msg = CONCAT('ns_id ', f_ns_id, ' is not positive; pass a positive ns_id, or NULL to pick one');
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;
  SELECT ns_id INTO v_id FROM mc_namespaces WHERE ns_name = f_ns_name;
  IF v_id IS NOT NULL AND (f_ns_id IS NULL OR v_id = f_ns_id) THEN
    SELECT ns_id, ns_name FROM mc_namespaces WHERE ns_id = v_id;
  ELSEIF v_id IS NOT NULL THEN
    SET v_msg = CONCAT('namespace name ', QUOTE(f_ns_name), ' already belongs to ns_id ', v_id);
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  ELSE
    IF f_ns_id IS NOT NULL THEN
      SELECT ns_name INTO v_name FROM mc_namespaces WHERE ns_id = f_ns_id;
      IF v_name IS NOT NULL THEN
        SET v_msg = CONCAT('ns_id ', f_ns_id, ' already belongs to namespace ', QUOTE(v_name));
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
      END IF;
    END IF;
    INSERT INTO mc_namespaces (ns_id, ns_name) VALUES (f_ns_id, f_ns_name);
    SELECT IFNULL(f_ns_id, LAST_INSERT_ID()) AS ns_id, f_ns_name AS ns_name;
  END IF;
END $$
DELIMITER ;

-- ---------------------------------------------------------------------------------------------
-- flush_namespace(f_ns_id)
--   Removes every registered key of the namespace from memcached in every data center.
--   Works through the namespace's keys in key order, in chunks of mc_settings
--   'flush_chunk_keys' keys (10000 when unset), each chunk its own transaction, then writes a
--   'flush' marker row carrying the flush id and token. mcrepl's workers record the marker
--   when they reach it, so `mcrepl flush` can wait until every data center has applied it.
--   The walk stops at the largest key the namespace had when the flush began.
--   A chunk (a READ COMMITTED transaction, whatever the session's level: no gap locks):
--     1. takes the next keys still owned by the namespace with FOR UPDATE, into a temporary
--        table (a trigger may not modify a table its own statement reads, error 1442);
--     2. removes exactly those keys from mc_stored_keys with one set-based DELETE of the
--        namespace's keys between the chunk's first and last key, and checks its row count:
--        more rows than locked keys means a key of the namespace was set into that range after
--        step 1, and the chunk is rolled back and redone deleting the locked keys through a
--        join (slower, exact);
--     3. writes one 'delete' row per key, carrying the flush id.
--   So a key another namespace set in the meantime is left alone, a concurrent set of one of
--   the chunk's keys waits until the chunk commits (so it lands after the delete), and a set of
--   a new key never waits for the flush.
--   While the chunks run, the session variable @mc_flush_id holds the flush id, so the trigger
--   passes the chunks' delete rows through without its per-row work (validation and registry
--   delete; docs/decisions/0012-flush-bypasses-the-trigger.md). @mc_flush_id is NULL again when
--   the procedure returns, also after an error (which rolls back the chunk under way and is
--   raised again unchanged; chunks already committed stay done).
--   Every write is committed here, whatever the caller's autocommit; an open transaction of the
--   caller is committed first.
--   Returns one row: (flush_id, key_count, token), key_count = keys deleted.
-- Writes: mc_flushes, mc_stored_keys (DELETE), mc_storage ('delete' rows, then a 'flush'
--   marker); sets @mc_flush_id and clears it.
-- SIGNALs (45000): unknown or NULL namespace.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS flush_namespace;
DELIMITER $$
CREATE PROCEDURE flush_namespace(IN f_ns_id INT)
MODIFIES SQL DATA
BEGIN
  DECLARE v_flush_id BIGINT UNSIGNED;
  DECLARE v_token CHAR(36) DEFAULT UUID();
  DECLARE v_total BIGINT UNSIGNED DEFAULT 0;
  DECLARE v_deleted BIGINT UNSIGNED DEFAULT 0;
  DECLARE v_chunk BIGINT;
  DECLARE v_n INT DEFAULT 0;
  DECLARE v_rows BIGINT;
  DECLARE v_exact BOOLEAN DEFAULT FALSE;
  DECLARE v_last VARBINARY(250) DEFAULT '';
  DECLARE v_lo VARBINARY(250);
  DECLARE v_hi VARBINARY(250);
  DECLARE v_max VARBINARY(250);
  DECLARE v_msg VARCHAR(255);
  -- Whatever fails: no chunk half done, no @mc_flush_id left set, the error raised as it was.
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    SET @mc_flush_id = NULL;
    DROP TEMPORARY TABLE IF EXISTS mc_flush_chunk;
    RESIGNAL;
  END;
  COMMIT;
  IF f_ns_id IS NULL OR NOT EXISTS (SELECT 1 FROM mc_namespaces WHERE ns_id = f_ns_id) THEN
    SET v_msg = CONCAT('unknown namespace ', IFNULL(f_ns_id, 'NULL'));
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;
  SELECT MAX(CAST(value AS UNSIGNED)) INTO v_chunk FROM mc_settings WHERE name = 'flush_chunk_keys';
  IF v_chunk IS NULL OR v_chunk < 1 THEN
    SET v_chunk = 10000;
  END IF;

  -- n: the chunk a key belongs to (the table is not emptied between chunks).
  DROP TEMPORARY TABLE IF EXISTS mc_flush_chunk;
  CREATE TEMPORARY TABLE mc_flush_chunk (
    n      INT            NOT NULL,
    mc_key VARBINARY(250) NOT NULL,
    PRIMARY KEY (n, mc_key)
  ) ENGINE=InnoDB;
  SELECT COUNT(*), MAX(mc_key) INTO v_total, v_max FROM mc_stored_keys WHERE ns_id = f_ns_id;

  START TRANSACTION;
  INSERT INTO mc_flushes (token, ns_id, key_count) VALUES (v_token, f_ns_id, v_total);
  SET v_flush_id = LAST_INSERT_ID();
  COMMIT;

  SET @mc_flush_id = v_flush_id;
  chunks: WHILE v_last < v_max DO
    SET v_n = v_n + 1;
    -- No gap locks: a set of a new key is never held up by the flush (nor deadlocked with it),
    -- and the other keys the DELETE below scans are not left locked. Step 2 checks for what a
    -- gap lock would have prevented.
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    INSERT INTO mc_flush_chunk (n, mc_key)
      SELECT v_n, mc_key FROM mc_stored_keys FORCE INDEX (ns_key)
      WHERE ns_id = f_ns_id AND mc_key > v_last AND mc_key <= v_max
      ORDER BY mc_key LIMIT v_chunk
      FOR UPDATE;
    SET v_rows = ROW_COUNT();
    IF v_rows = 0 THEN
      COMMIT;
      LEAVE chunks;
    END IF;
    SELECT MIN(mc_key), MAX(mc_key) INTO v_lo, v_hi FROM mc_flush_chunk WHERE n = v_n;
    IF v_exact THEN
      DELETE k FROM mc_flush_chunk c STRAIGHT_JOIN mc_stored_keys k ON k.mc_key = c.mc_key
        WHERE c.n = v_n AND k.ns_id = f_ns_id;
      SET v_exact = FALSE;
    ELSE
      -- One range scan (twice as fast as the join). It deletes every key of the namespace in
      -- [v_lo, v_hi]: all of the chunk's keys (locked above), and only them unless another
      -- key of the namespace slipped into the range since.
      DELETE FROM mc_stored_keys WHERE ns_id = f_ns_id AND mc_key BETWEEN v_lo AND v_hi;
      IF ROW_COUNT() <> v_rows THEN
        -- A key of the namespace was set into the range after step 1: redo the chunk exactly.
        ROLLBACK;
        SET v_exact = TRUE;
        ITERATE chunks;
      END IF;
    END IF;
    INSERT INTO mc_storage (ns_id, mc_key, op, flush_id)
      SELECT f_ns_id, mc_key, 'delete', v_flush_id FROM mc_flush_chunk WHERE n = v_n;
    SET v_deleted = v_deleted + ROW_COUNT();
    COMMIT;
    SET v_last = v_hi;
  END WHILE;
  SET @mc_flush_id = NULL;
  DROP TEMPORARY TABLE IF EXISTS mc_flush_chunk;

  START TRANSACTION;
  INSERT INTO mc_storage (ns_id, op, flush_id, mc_value) VALUES (f_ns_id, 'flush', v_flush_id, v_token);
  UPDATE mc_flushes SET key_count = v_deleted WHERE flush_id = v_flush_id;
  COMMIT;
  SELECT v_flush_id AS flush_id, v_deleted AS key_count, v_token AS token;
END $$
DELIMITER ;

-- ---------------------------------------------------------------------------------------------
-- flush_namespace_by_name(f_ns_name)   flush_namespace() for a namespace given by name.
-- SIGNALs (45000): unknown namespace name.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS flush_namespace_by_name;
DELIMITER $$
CREATE PROCEDURE flush_namespace_by_name(IN f_ns_name VARCHAR(64) CHARSET utf8mb4)
MODIFIES SQL DATA
BEGIN
  DECLARE v_id INT DEFAULT NULL;
  DECLARE v_msg VARCHAR(255);
  SELECT ns_id INTO v_id FROM mc_namespaces WHERE ns_name = f_ns_name;
  IF v_id IS NULL THEN
    SET v_msg = CONCAT('unknown namespace ', IFNULL(QUOTE(f_ns_name), 'NULL'));
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;
  CALL flush_namespace(v_id);
END $$
DELIMITER ;
