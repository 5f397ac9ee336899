// dump.js: run one query through node-postgres (pg) and print its rows as JSON, for
// tests/integration/test_masking.py. Connection settings come from PG* environment variables.
// Arguments: SQL [PARAM...]. With parameters the query goes through the extended protocol
// (Parse/Bind/Execute); without, through a simple Query. Every column is returned as the
// server's text (type parsers are off), NULL as null. Prints {"rows": [[...], ...]}.
'use strict';
const { Client, types } = require('pg');

async function main() {
  const [sql, ...params] = process.argv.slice(2);
  const c = new Client({ types: { getTypeParser: () => (v) => v } });
  await c.connect();
  try {
    const r = params.length
      ? await c.query({ text: sql, values: params, rowMode: 'array' })
      : await c.query({ text: sql, rowMode: 'array' });
    process.stdout.write(JSON.stringify({ rows: r.rows }) + '\n');
  } finally {
    await c.end();
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
