-- =============================================================================================
-- Procedures: the application's interface. Each validates with mc_row_problem() and refuses
-- bad input with SIGNAL SQLSTATE '45000' and a message naming the problem, so nothing invalid
-- reaches the binlog through them.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- set_key(f_ns_id, f_mc_key, f_mc_value, f_expire)
--   The original interface, same name, parameters and order. Types are widened so nothing is
--   silently truncated: keys and values are bytes (utf8mb4 text arrives as its UTF-8 bytes).
--   f_expire: 0 = never, 1..2592000 = seconds from the statement's time, larger = unix time.
-- Writes: one 'set' row into mc_storage (the trigger upserts mc_stored_keys).
-- SIGNALs (45000): unknown/NULL namespace; NULL, empty, >250-byte key; key with a space or
--   control byte; NULL value; negative or >32-bit expire; key+value over the item size.
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
--   The keys are copied out first (a trigger may not modify a table its own statement reads,
--   error 1442), then deleted in chunks of 5000, each chunk its own transaction, then a 'flush'
--   marker row carrying the flush id and token is written. mcrepl's workers record the marker
--   when they reach it, so `mcrepl flush` can wait until every data center has applied it.
--   Each chunk re-reads its keys with FOR UPDATE and deletes only those still owned by the
--   namespace: a key another namespace set in the meantime is left alone, and a concurrent
--   set of one of the chunk's keys waits until the chunk commits (so it lands after the delete).
--   Every write is committed here, whatever the caller's autocommit; an open transaction of the
--   caller is committed first.
--   Returns one row: (flush_id, key_count, token), key_count = keys deleted.
-- Writes: mc_flushes, mc_storage ('delete' rows, then a 'flush' marker), mc_stored_keys (via
--   the trigger).
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
  DECLARE v_from BIGINT UNSIGNED DEFAULT 1;
  DECLARE v_chunk INT DEFAULT 5000;
  DECLARE v_msg VARCHAR(255);
  COMMIT;
  IF f_ns_id IS NULL OR NOT EXISTS (SELECT 1 FROM mc_namespaces WHERE ns_id = f_ns_id) THEN
    SET v_msg = CONCAT('unknown namespace ', IFNULL(f_ns_id, 'NULL'));
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;

  DROP TEMPORARY TABLE IF EXISTS mc_flush_keys;
  CREATE TEMPORARY TABLE mc_flush_keys (
    seq    BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    mc_key VARBINARY(250)  NOT NULL
  ) ENGINE=InnoDB;
  DROP TEMPORARY TABLE IF EXISTS mc_flush_chunk;
  CREATE TEMPORARY TABLE mc_flush_chunk (mc_key VARBINARY(250) NOT NULL PRIMARY KEY) ENGINE=InnoDB;
  INSERT INTO mc_flush_keys (mc_key) SELECT mc_key FROM mc_stored_keys WHERE ns_id = f_ns_id;
  SELECT COUNT(*) INTO v_total FROM mc_flush_keys;

  START TRANSACTION;
  INSERT INTO mc_flushes (token, ns_id, key_count) VALUES (v_token, f_ns_id, v_total);
  SET v_flush_id = LAST_INSERT_ID();
  COMMIT;

  WHILE v_from <= v_total DO
    START TRANSACTION;
    DELETE FROM mc_flush_chunk;
    INSERT INTO mc_flush_chunk (mc_key)
      SELECT k.mc_key FROM mc_flush_keys f JOIN mc_stored_keys k ON k.mc_key = f.mc_key
      WHERE f.seq >= v_from AND f.seq < v_from + v_chunk AND k.ns_id = f_ns_id
      FOR UPDATE;
    INSERT INTO mc_storage (ns_id, mc_key, op) SELECT f_ns_id, mc_key, 'delete' FROM mc_flush_chunk;
    SET v_deleted = v_deleted + ROW_COUNT();
    COMMIT;
    SET v_from = v_from + v_chunk;
  END WHILE;
  DROP TEMPORARY TABLE IF EXISTS mc_flush_keys;
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
