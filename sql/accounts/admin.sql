-- =============================================================================================
-- The operators' account (`mcrepl flush`, `status`, `verify`): reads the namespaces and the key
-- registry, calls the procedures (flush_namespace), changes nothing directly.
--   SELECT, EXECUTE on the schema
-- =============================================================================================
CREATE USER IF NOT EXISTS {{account}} IDENTIFIED BY {{password}};
ALTER USER {{account}} IDENTIFIED BY {{password}};
GRANT SELECT, EXECUTE ON {{db}}.* TO {{account}};
