-- =============================================================================================
-- The applications' account: writes cache entries, nothing else.
--   EXECUTE on the schema   set_key, delete_key, create_namespace, flush_namespace(_by_name)
--                           (they run as their definer, so no table rights are needed)
--   INSERT on mc_storage    direct inserts (the trigger runs as its definer too)
-- It can neither read nor change the key registry (mc_stored_keys) or any other table.
-- =============================================================================================
CREATE USER IF NOT EXISTS {{account}} IDENTIFIED BY {{password}};
ALTER USER {{account}} IDENTIFIED BY {{password}};
GRANT EXECUTE ON {{db}}.* TO {{account}};
GRANT INSERT ON {{db}}.mc_storage TO {{account}};
