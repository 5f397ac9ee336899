// approval_wait.js: node-postgres against a statement that sluice parks for approval (mode
// wait), run by tests/integration/test_approvals.py. Connection settings come from the PG*
// environment; the statement from argv[2], its parameters (JSON array: extended protocol)
// from argv[3] if given. Each NoticeResponse is printed at once as
// `NOTICE <message>` (the test reads the request id from it and decides meanwhile), then the
// outcome: `OK <rowCount>` or `ERR <sqlstate> <message>`; after an error the connection must
// still answer `SELECT 1` (`ALIVE`).
'use strict';
const { Client } = require('pg');

async function main() {
  const sql = process.argv[2];
  const params = process.argv[3] ? JSON.parse(process.argv[3]) : undefined;
  const c = new Client();
  c.on('notice', (n) => process.stdout.write(`NOTICE ${n.message}\n`));
  await c.connect();
  try {
    try {
      const r = await c.query(sql, params);
      process.stdout.write(`OK ${r.rowCount}\n`);
    } catch (e) {
      process.stdout.write(`ERR ${e.code} ${e.message}\n`);
      const r = await c.query('SELECT 1 AS one');
      if (r.rows[0].one === 1) process.stdout.write('ALIVE\n');
    }
  } finally {
    await c.end();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
