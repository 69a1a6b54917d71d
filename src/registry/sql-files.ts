/**
 * The SQL surface's files (sql/*.sql, in name order). They use the mysql client's DELIMITER
 * syntax so they also work with `mysql db < file`; this splits them the same way.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** sql/ next to the package root (dist/src/registry → ../../../sql). */
export const SQL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'sql');

/**
 * Splits a script into statements the way the mysql client does: on the current delimiter
 * (`;`, or what a `DELIMITER x` line at the start of a line sets), never inside quotes,
 * backquotes or comments (`-- `, `#`, `/* *\/`). Comments stay with the statement they precede;
 * chunks that hold only comments are dropped.
 */
export function splitSqlScript(script: string): string[] {
  const text = script.replace(/\r\n/g, '\n');
  const statements: string[] = [];
  let delimiter = ';';
  let buf = '';
  let code = false; // whether buf holds anything but comments and whitespace
  let lineStart = true;
  const push = () => {
    if (code) statements.push(buf.trim());
    buf = '';
    code = false;
  };
  let i = 0;
  while (i < text.length) {
    if (lineStart) {
      const m = /^[ \t]*DELIMITER[ \t]+(\S+)[ \t]*(?:\r?\n|$)/i.exec(text.slice(i, i + 300));
      if (m) {
        delimiter = m[1]!;
        i += m[0].length;
        continue;
      }
    }
    const c = text[i]!;
    const next = text[i + 1];
    if ((c === '-' && next === '-' && (i + 2 >= text.length || /\s/.test(text[i + 2]!))) || c === '#') {
      const eol = text.indexOf('\n', i);
      const end = eol < 0 ? text.length : eol;
      buf += text.slice(i, end);
      i = end;
      continue;
    }
    if (c === '/' && next === '*') {
      const close = text.indexOf('*/', i + 2);
      const end = close < 0 ? text.length : close + 2;
      buf += text.slice(i, end);
      i = end;
      continue;
    }
    if (c === "'" || c === '"' || c === '`') {
      let j = i + 1;
      while (j < text.length) {
        if (text[j] === '\\' && c !== '`') j += 2;
        else if (text[j] === c && text[j + 1] === c) j += 2;
        else if (text[j] === c) break;
        else j++;
      }
      buf += text.slice(i, j + 1);
      code = true;
      lineStart = false;
      i = j + 1;
      continue;
    }
    if (text.startsWith(delimiter, i)) {
      push();
      i += delimiter.length;
      lineStart = false;
      continue;
    }
    buf += c;
    if (!/\s/.test(c)) code = true;
    lineStart = c === '\n';
    i++;
  }
  push();
  return statements;
}

export function sqlFiles(dir = SQL_DIR): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((f) => path.join(dir, f));
}

