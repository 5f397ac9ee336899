// policy.js: node-postgres sees sluice's refusals as ordinary PostgreSQL errors, run by
// tests/integration/test_policy.py as an identity under the default guardrails. Simple and
// extended protocol, inside and outside a transaction; the client stays usable. Prints "OK".
'use strict';
const { Client } = require('pg');
const assert = require('assert');

async function main() {
  const c = new Client();
  await c.connect();
  try {
    const refused = (e) => e.code === '42501' && /blocked by rule "(drop|delete_without_where)"/.test(e.message);
    await assert.rejects(c.query('DROP TABLE orders'), refused); // simple protocol
    await assert.rejects(c.query('DELETE FROM orders WHERE $1', [true]), refused); // extended
    await assert.rejects(c.query({ name: 'del', text: 'DELETE FROM orders' }), refused);
    let r = await c.query('SELECT count(*)::int AS n FROM orders WHERE id > $1', [0]);
    assert.ok(r.rows[0].n > 0);
    await c.query('BEGIN');
    await c.query('SELECT 1');
    await assert.rejects(c.query('DELETE FROM orders'), refused);
    await assert.rejects(c.query('SELECT 1'), (e) => e.code === '25P02');
    await c.query('ROLLBACK');
    r = await c.query('SELECT $1::int AS v', [5]);
    assert.strictEqual(r.rows[0].v, 5);
    console.log('OK');
  } finally {
    await c.end();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
