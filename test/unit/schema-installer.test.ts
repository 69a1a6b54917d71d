import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { SQL_DIR, splitSqlScript, sqlFiles } from '../../src/registry/schema-installer.js';

/** dist/test/unit → the package root. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The statement without its leading `--` comment lines. */
const code = (stmt: string) =>
  stmt
    .split('\n')
    .filter((l) => !/^\s*--/.test(l))
    .join('\n')
    .trim();

describe('splitSqlScript', () => {
  test('splits on ; at the end of a line and drops the delimiter', () => {
    assert.deepEqual(splitSqlScript('CREATE TABLE a (x INT);\nINSERT INTO a VALUES (1);\n'), ['CREATE TABLE a (x INT)', 'INSERT INTO a VALUES (1)']);
  });

  test('keeps multi-line statements whole, lines joined with \\n', () => {
    assert.deepEqual(splitSqlScript('CREATE TABLE a (\n  x INT,\n  y INT\n);\nSELECT 1;'), ['CREATE TABLE a (\n  x INT,\n  y INT\n)', 'SELECT 1']);
  });

  test('a ; inside a line does not end the statement', () => {
    assert.deepEqual(splitSqlScript("INSERT INTO t VALUES ('a;b'),\n('c');\n"), ["INSERT INTO t VALUES ('a;b'),\n('c')"]);
  });

  test('DELIMITER blocks keep compound statements whole, and ; comes back after', () => {
    const script = [
      'DROP PROCEDURE IF EXISTS p;',
      'DELIMITER $$',
      'CREATE PROCEDURE p()',
      'BEGIN',
      '  SELECT 1;',
      '  SELECT 2;',
      'END $$',
      'DELIMITER ;',
      'CALL p();',
    ].join('\n');
    assert.deepEqual(splitSqlScript(script), ['DROP PROCEDURE IF EXISTS p', 'CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND', 'CALL p()']);
  });

  test('other delimiters, lowercase and indented DELIMITER lines', () => {
    const script = ['  delimiter //', 'CREATE FUNCTION f() RETURNS INT', 'BEGIN', '  RETURN 1;', 'END//', '\tDelimiter ;  ', 'SELECT f();'].join('\n');
    assert.deepEqual(splitSqlScript(script), ['CREATE FUNCTION f() RETURNS INT\nBEGIN\n  RETURN 1;\nEND', 'SELECT f()']);
  });

  test('several statements inside one DELIMITER block', () => {
    const script = 'DELIMITER $$\nCREATE TRIGGER a BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.x = 1; END$$\nCREATE TRIGGER b BEFORE UPDATE ON t FOR EACH ROW BEGIN SET NEW.x = 2; END $$\nDELIMITER ;\n';
    assert.deepEqual(splitSqlScript(script), [
      'CREATE TRIGGER a BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.x = 1; END',
      'CREATE TRIGGER b BEFORE UPDATE ON t FOR EACH ROW BEGIN SET NEW.x = 2; END',
    ]);
  });

  test('comment-only chunks are dropped, comments before a statement stay with it', () => {
    const script = ['-- header comment', '-- another line ending with a semicolon;', '', '-- about t', 'CREATE TABLE t (x INT);', '-- trailing comment', ''].join('\n');
    const out = splitSqlScript(script);
    assert.equal(out.length, 1);
    assert.match(out[0]!, /-- about t\nCREATE TABLE t \(x INT\)$/);
    assert.equal(code(out[0]!), 'CREATE TABLE t (x INT)');
  });

  test('a last statement without a delimiter is kept', () => {
    assert.deepEqual(splitSqlScript('SELECT 1;\nSELECT 2'), ['SELECT 1', 'SELECT 2']);
  });

  test('empty, blank and comment-only scripts give no statements', () => {
    assert.deepEqual(splitSqlScript(''), []);
    assert.deepEqual(splitSqlScript('\n\n   \n'), []);
    assert.deepEqual(splitSqlScript('-- nothing here\n  -- nor here\n'), []);
    assert.deepEqual(splitSqlScript(';\n;\n'), []);
  });

  test('CRLF line endings', () => {
    assert.deepEqual(splitSqlScript('SELECT 1;\r\nDELIMITER $$\r\nCREATE PROCEDURE p()\r\nBEGIN\r\n  SELECT 2;\r\nEND $$\r\nDELIMITER ;\r\nSELECT 3;\r\n'), [
      'SELECT 1',
      'CREATE PROCEDURE p()\nBEGIN\n  SELECT 2;\nEND',
      'SELECT 3',
    ]);
  });

  test('trailing whitespace after the delimiter is ignored', () => {
    assert.deepEqual(splitSqlScript('SELECT 1;   \nSELECT 2;\t\n'), ['SELECT 1', 'SELECT 2']);
  });

  test('two statements on one line are split, as the mysql client does', () => {
    assert.deepEqual(splitSqlScript('SELECT 1; SELECT 2;\n'), ['SELECT 1', 'SELECT 2']);
  });

  test('a comment after the delimiter does not glue the next statement on', () => {
    assert.deepEqual(splitSqlScript('CREATE TABLE a (x INT); -- note\nCREATE TABLE b (y INT);\n').map(code), ['CREATE TABLE a (x INT)', 'CREATE TABLE b (y INT)']);
  });

  test('a -- comment line ending in ; inside a statement does not split it', () => {
    const script = 'CREATE TABLE t (\n  a INT, -- the id;\n  b INT\n);\n';
    assert.deepEqual(splitSqlScript(script), ['CREATE TABLE t (\n  a INT, -- the id;\n  b INT\n)']);
  });
});

describe('the real SQL files', () => {
  const files = sqlFiles();
  const texts = new Map(files.map((f) => [path.basename(f), fs.readFileSync(f, 'utf8')]));
  const split = new Map([...texts].map(([name, text]) => [name, splitSqlScript(text)]));

  test('SQL_DIR is the package sql/ directory and sqlFiles lists its .sql files in name order', () => {
    assert.equal(SQL_DIR, path.join(ROOT, 'sql'));
    const expected = fs
      .readdirSync(path.join(ROOT, 'sql'))
      .filter((f) => f.endsWith('.sql'))
      .sort();
    assert.ok(expected.length >= 4);
    assert.deepEqual(
      files.map((f) => path.basename(f)),
      expected,
    );
    assert.ok(files.every((f) => path.isAbsolute(f) && path.dirname(f) === SQL_DIR));
    assert.deepEqual(
      sqlFiles(SQL_DIR).map((f) => path.basename(f)),
      expected,
    );
  });

  test('every file splits into non-empty statements with no delimiter left over', () => {
    for (const [name, stmts] of split) {
      assert.ok(stmts.length > 0, `${name} has no statements`);
      for (const s of stmts) {
        const c = code(s);
        assert.notEqual(c, '', `${name}: a comment-only statement`);
        assert.ok(!/;\s*$/.test(c) && !/\$\$\s*$/.test(c), `${name}: statement ends with a delimiter: ${c.slice(-40)}`);
        assert.ok(!/^\s*DELIMITER\b/im.test(s), `${name}: a DELIMITER line leaked into a statement`);
        assert.equal(s, s.trim(), `${name}: statement not trimmed`);
      }
    }
  });

  test('each file yields the expected statements', () => {
    const firstLine = (s: string) => code(s).split('\n')[0]!;
    assert.deepEqual(split.get('001_tables.sql')!.map(firstLine), [
      'CREATE TABLE IF NOT EXISTS mc_settings (',
      "INSERT IGNORE INTO mc_settings (name, value) VALUES ('max_item_bytes', '1048576')",
      'CREATE TABLE IF NOT EXISTS mc_namespaces (',
      'CREATE TABLE IF NOT EXISTS mc_storage (',
      'CREATE TABLE IF NOT EXISTS mc_stored_keys (',
      'CREATE TABLE IF NOT EXISTS mc_flushes (',
      // The upgrade of older installs, run once and dropped.
      'DROP PROCEDURE IF EXISTS mc_upgrade_tables',
      'CREATE PROCEDURE mc_upgrade_tables()',
      'CALL mc_upgrade_tables()',
      'DROP PROCEDURE mc_upgrade_tables',
    ]);
    assert.deepEqual(split.get('010_validation.sql')!.map(firstLine), [
      'DROP FUNCTION IF EXISTS mc_row_problem',
      'CREATE FUNCTION mc_row_problem(p_ns_id INT, p_key LONGBLOB, p_value LONGBLOB, p_expire BIGINT,',
    ]);
    assert.deepEqual(split.get('020_registry_trigger.sql')!.map(firstLine), [
      'DROP TRIGGER IF EXISTS mc_storage_before_insert',
      'CREATE TRIGGER mc_storage_before_insert BEFORE INSERT ON mc_storage',
    ]);
    assert.deepEqual(split.get('040_registry_expiry.sql')!.map(firstLine), [
      'DROP PROCEDURE IF EXISTS mc_sweep_expired',
      'CREATE PROCEDURE mc_sweep_expired(IN p_batch INT, IN p_grace_s INT)',
    ]);
    const procs = split.get('030_procedures.sql')!.map(firstLine);
    assert.equal(procs.length, 10);
    for (const name of ['set_key', 'delete_key', 'create_namespace', 'flush_namespace', 'flush_namespace_by_name']) {
      const drop = procs.indexOf(`DROP PROCEDURE IF EXISTS ${name}`);
      assert.ok(drop >= 0, `no DROP for ${name}`);
      assert.ok(procs[drop + 1]!.startsWith(`CREATE PROCEDURE ${name}(`), `CREATE for ${name} should follow its DROP`);
    }
  });

  test('CREATE PROCEDURE / FUNCTION / TRIGGER bodies stay whole', () => {
    let compound = 0;
    for (const [name, stmts] of split) {
      const text = texts.get(name)!.replace(/\r\n/g, '\n');
      for (const s of stmts) {
        const c = code(s);
        if (!/^CREATE (PROCEDURE|FUNCTION|TRIGGER)\b/.test(c)) continue;
        compound++;
        assert.match(c, /\bBEGIN\b/, `${name}: no BEGIN`);
        assert.match(c, /\nEND$/, `${name}: does not end with END`);
        // The same text as in the file, from CREATE to the END before `$$`.
        const body = s.replace(/^(\s*--[^\n]*\n)*/, '');
        assert.ok(text.includes(`${body} $$\n`), `${name}: body differs from the file:\n${body.slice(0, 80)}`);
        // Inner statements keep their semicolons.
        assert.ok((c.match(/;/g) ?? []).length >= 1);
        // Nothing after the body's END: the next statement starts after `DELIMITER ;`.
        assert.ok(!/\bDROP (PROCEDURE|FUNCTION|TRIGGER)\b/.test(c), `${name}: the next DROP was glued on`);
      }
    }
    // 1 function + 1 trigger + 5 procedures + mc_upgrade_tables + mc_sweep_expired
    assert.equal(compound, 9);
  });

  test('the whole procedure file is covered: every CREATE in the file is one statement', () => {
    for (const [name, text] of texts) {
      const creates = (text.match(/^CREATE (PROCEDURE|FUNCTION|TRIGGER|TABLE)\b/gm) ?? []).length;
      const stmts = split.get(name)!.filter((s) => /^CREATE (PROCEDURE|FUNCTION|TRIGGER|TABLE)\b/.test(code(s))).length;
      assert.equal(stmts, creates, name);
    }
  });
});
