-- =============================================================================================
-- Registry expiry: removes the rows of mc_stored_keys whose keys expired, so the registry does
-- not only grow and flushes stay as fast as the live keys allow.
-- docs/decisions/0018-registry-expiry.md says why it is a procedure called by the active tailer
-- rather than an EVENT, and why each of the choices below.
-- =============================================================================================

-- ---------------------------------------------------------------------------------------------
-- mc_sweep_expired(p_batch, p_grace_s)
--   Removes at most p_batch registry rows whose expiry (expires_at, unix seconds) is more than
--   p_grace_s seconds ago, oldest expiry first, in one short transaction. Call it again while it
--   returns p_batch. Rows of keys that never expire (expires_at NULL) are never touched.
--   * Writes only mc_stored_keys, never mc_storage: it produces no cache operation (memcached
--     already dropped these items), and the binlog gets only mc_stored_keys row deletes, which
--     the tailer does not read.
--   * p_grace_s keeps a key for a while after its expiry in MySQL's clock, because memcached
--     may hold it longer: the trigger computes expires_at from the statement's time, the tailer
--     from the commit's (later, by as long as the transaction stayed open), and the workers'
--     and memcached's clocks may be behind. A flush must still find such a key.
--   * Rows another transaction has locked are skipped (SKIP LOCKED), never waited for: a
--     set_key() refreshing the key, or a flush chunk holding it. A refreshed key's new expiry
--     wins: its row is skipped, or, if the sweep locked it first, deleted and then inserted
--     anew by the waiting set_key(). The expiry is checked again on each row once it is locked.
--   * The rows are locked the way flush_namespace() locks them, through the ns_key index and
--     then the row, after a plain (non-locking) read of the oldest expiries. Locking them
--     through the expires_at index instead deadlocked with a flush: the flush held a row's
--     ns_key entry while it waited for the row, which the sweep held while it waited to delete
--     that ns_key entry. As it is, the sweep never waits for a row lock, so it cannot deadlock;
--     a flush chunk or set that wants a row the sweep holds waits for this one short
--     transaction (at most p_batch rows).
--   * READ COMMITTED whatever the session's level: no gap locks, so sets of new keys never wait.
--   Every write is committed here; an open transaction of the caller is committed first.
--   Runs as its definer, so the tailer's account needs only EXECUTE on this procedure (granted
--   by sql/accounts/tailer.sql), not DELETE on the registry.
--   Returns one row: (removed, expired_before) = rows deleted, and the unix time they expired
--   before.
-- Writes: mc_stored_keys (DELETE), two temporary tables of the session.
-- SIGNALs (45000): p_batch NULL or outside 1..100000; p_grace_s NULL or negative.
-- ---------------------------------------------------------------------------------------------
DROP PROCEDURE IF EXISTS mc_sweep_expired;
DELIMITER $$
CREATE PROCEDURE mc_sweep_expired(IN p_batch INT, IN p_grace_s INT)
MODIFIES SQL DATA
SQL SECURITY DEFINER
BEGIN
  DECLARE v_before BIGINT;
  DECLARE v_removed BIGINT DEFAULT 0;
  DECLARE v_msg VARCHAR(255);
  DECLARE EXIT HANDLER FOR SQLEXCEPTION
  BEGIN
    ROLLBACK;
    DROP TEMPORARY TABLE IF EXISTS mc_sweep_candidates;
    DROP TEMPORARY TABLE IF EXISTS mc_sweep_batch;
    RESIGNAL;
  END;
  IF p_batch IS NULL OR p_batch < 1 OR p_batch > 100000 THEN
    SET v_msg = CONCAT('batch size ', IFNULL(p_batch, 'NULL'), ' is out of range; give 1 to 100000 rows');
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;
  IF p_grace_s IS NULL OR p_grace_s < 0 THEN
    SET v_msg = CONCAT('grace ', IFNULL(p_grace_s, 'NULL'), ' is not a number of seconds (0 or more)');
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v_msg;
  END IF;
  COMMIT;
  SET v_before = UNIX_TIMESTAMP() - p_grace_s;
  DROP TEMPORARY TABLE IF EXISTS mc_sweep_candidates;
  DROP TEMPORARY TABLE IF EXISTS mc_sweep_batch;
  CREATE TEMPORARY TABLE mc_sweep_candidates (
    ns_id  INT            NOT NULL,
    mc_key VARBINARY(250) NOT NULL,
    PRIMARY KEY (ns_id, mc_key)
  ) ENGINE=InnoDB;
  CREATE TEMPORARY TABLE mc_sweep_batch (
    mc_key VARBINARY(250) NOT NULL PRIMARY KEY
  ) ENGINE=InnoDB;

  SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
  START TRANSACTION;
  -- 1. The oldest expiries, read without locking anything.
  INSERT INTO mc_sweep_candidates (ns_id, mc_key)
    SELECT ns_id, mc_key FROM mc_stored_keys FORCE INDEX (expires_at)
    WHERE expires_at < v_before
    ORDER BY expires_at LIMIT p_batch;
  -- 2. Lock them as a flush does (ns_key entry, then the row), skipping what another
  --    transaction holds, and keep those still expired.
  INSERT INTO mc_sweep_batch (mc_key)
    SELECT k.mc_key FROM mc_sweep_candidates c STRAIGHT_JOIN mc_stored_keys k FORCE INDEX (ns_key)
      ON k.ns_id = c.ns_id AND k.mc_key = c.mc_key
    WHERE k.expires_at < v_before
    FOR UPDATE SKIP LOCKED;
  -- 3. Delete exactly those (locked by this transaction since step 2).
  DELETE k FROM mc_sweep_batch b STRAIGHT_JOIN mc_stored_keys k ON k.mc_key = b.mc_key
    WHERE k.expires_at < v_before;
  SET v_removed = ROW_COUNT();
  COMMIT;
  DROP TEMPORARY TABLE mc_sweep_candidates;
  DROP TEMPORARY TABLE mc_sweep_batch;
  SELECT v_removed AS removed, v_before AS expired_before;
END $$
DELIMITER ;
