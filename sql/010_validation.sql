-- =============================================================================================
-- mc_row_problem(ns_id, key, value, expire, op, flush_id) RETURNS VARCHAR(255)
--
-- The one place the SQL side decides whether a cache operation is valid. Returns NULL for a
-- valid row, otherwise a message that names the problem. Used by the procedures (which SIGNAL
-- the message, so nothing bad reaches the binlog through them) and by the trigger on
-- mc_storage (which stores it in `problem`, so a bad row inserted directly is dead-lettered by
-- mcrepl with this reason instead of being lost or stopping the pipeline).
--
-- Rules (memcached's own limits):
--   op          'set', 'delete' or 'flush'
--   ns_id       an existing mc_namespaces.ns_id
--   key         1..250 bytes, no space (0x20), no control byte (0x00-0x1F, 0x7F)
--   value       not NULL for a set; key + value + 64 bytes of item overhead within
--               mc_settings.max_item_bytes
--   expire      0 (never), 1..2592000 seconds, or a unix timestamp; never negative, and
--               within memcached's 32-bit time. A value above 2592000 is a unix time to
--               memcached, so one that has already passed (3456000: 40 days meant as seconds,
--               read as 1970-02-10) is refused: memcached would drop the item at once, so the
--               set would silently never appear. "Passed" is UNIX_TIMESTAMP() here (the
--               statement's time); the tailer checks again against the commit time.
--   flush_id    not NULL for a 'flush' marker
--
-- Keys are checked byte-wise through HEX() so the same expression works on MariaDB's PCRE and
-- MySQL 8's ICU regular expressions (ICU refuses binary strings).
-- =============================================================================================

DROP FUNCTION IF EXISTS mc_row_problem;
DELIMITER $$
CREATE FUNCTION mc_row_problem(p_ns_id INT, p_key LONGBLOB, p_value LONGBLOB, p_expire BIGINT,
                               p_op VARCHAR(64), p_flush_id BIGINT UNSIGNED)
RETURNS VARCHAR(255)
READS SQL DATA
BEGIN
  DECLARE v_max_item BIGINT;
  DECLARE v_bad VARCHAR(600);

  -- Exact (binary) comparison: the tailer accepts exactly these spellings. (The trigger lower-cases
  -- `op` first, so 'SET' inserted directly is a set.)
  IF p_op IS NULL OR BINARY p_op NOT IN ('set', 'delete', 'flush') THEN
    RETURN CONCAT('unknown op ', IFNULL(QUOTE(LEFT(p_op, 32)), 'NULL'), '; expected set, delete or flush');
  END IF;
  IF p_ns_id IS NULL THEN
    RETURN 'namespace id is NULL';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM mc_namespaces WHERE ns_id = p_ns_id) THEN
    RETURN CONCAT('unknown namespace ', p_ns_id, '; create it first with create_namespace()');
  END IF;

  IF p_op = 'flush' THEN
    IF p_flush_id IS NULL THEN
      RETURN 'flush marker without flush_id; use flush_namespace()';
    END IF;
    RETURN NULL;
  END IF;

  IF p_key IS NULL THEN
    RETURN 'key is NULL';
  END IF;
  IF LENGTH(p_key) = 0 THEN
    RETURN 'key is empty';
  END IF;
  IF LENGTH(p_key) > 250 THEN
    RETURN CONCAT('key is ', LENGTH(p_key), ' bytes; memcached keys are at most 250 bytes');
  END IF;
  SET v_bad = REGEXP_SUBSTR(HEX(p_key), '^([0-9A-F]{2})*?(0[0-9A-F]|1[0-9A-F]|20|7F)');
  IF v_bad IS NOT NULL AND v_bad <> '' THEN
    RETURN CONCAT('key has ', IF(RIGHT(v_bad, 2) = '20', 'a space', CONCAT('control byte 0x', RIGHT(v_bad, 2))),
                  ' at byte ', LENGTH(v_bad) DIV 2,
                  '; memcached keys may not contain spaces or control characters');
  END IF;

  IF p_op = 'set' THEN
    IF p_value IS NULL THEN
      RETURN 'value is NULL; use delete_key() to remove a key';
    END IF;
    IF p_expire IS NULL THEN
      RETURN 'expire is NULL; use 0 for no expiry';
    END IF;
    IF p_expire < 0 THEN
      RETURN CONCAT('expire is ', p_expire, '; use 0 (never), seconds up to 2592000, or a unix timestamp');
    END IF;
    IF p_expire > 4294967295 THEN
      RETURN CONCAT('expire ', p_expire, ' is beyond the 32-bit unix time memcached accepts');
    END IF;
    -- The time is printed in UTC by calendar arithmetic from the epoch, not FROM_UNIXTIME(),
    -- which uses the session's time zone (CONVERT_TZ() would need the time zone tables).
    -- UNIX_TIMESTAMP() itself does not depend on the time zone. Same text as the tailer's check
    -- (src/source/row-decoder.ts).
    IF p_expire > 2592000 AND p_expire <= UNIX_TIMESTAMP() THEN
      RETURN CONCAT('expire ', p_expire, ' is above 2592000 (30 days), so memcached reads it as a unix time, and that time (',
                    DATE_FORMAT(CAST('1970-01-01 00:00:00' AS DATETIME) + INTERVAL p_expire SECOND, '%Y-%m-%d %H:%i:%s'),
                    ' UTC) has already passed; give seconds up to 2592000 or a future unix time');
    END IF;
    SELECT CAST(value AS SIGNED) INTO v_max_item FROM mc_settings WHERE name = 'max_item_bytes';
    IF LENGTH(p_key) + LENGTH(p_value) + 64 > IFNULL(v_max_item, 1048576) THEN
      RETURN CONCAT('value is ', LENGTH(p_value), ' bytes; with its key and 64 bytes of overhead it exceeds ',
                    'the memcached item size of ', IFNULL(v_max_item, 1048576), ' bytes (mc_settings.max_item_bytes)');
    END IF;
  END IF;
  RETURN NULL;
END $$
DELIMITER ;
