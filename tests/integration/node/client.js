// client.js: node-postgres (pg) through sluice, run by tests/integration/test_node.py.
// Connection settings come from PG* environment variables. Does a parameterized query, a
// transaction with a rollback and a commit, a failed transaction, and LISTEN/NOTIFY checking
// that the notification's processId is the backend pid. Prints "OK" on success; any failure
// exits non-zero with the error on stderr.
'use strict';
const { Client } = require('pg');
const assert = require('assert');

async function main() {
  const a = new Client();
  const b = new Client();
  await a.connect();
  await b.connect();
  try {
    // parameterized (extended protocol)
    let r = await a.query('SELECT $1::int + $2::int AS sum, $3::text AS t', [40, 2, 'hé "x"']);
    assert.strictEqual(r.rows[0].sum, 42);
    assert.strictEqual(r.rows[0].t, 'hé "x"');
    r = await a.query({ name: 'by-id', text: 'SELECT name FROM customers WHERE id = $1', values: [3] });
    assert.strictEqual(r.rows[0].name, 'customer 3');
    r = await a.query({ name: 'by-id', text: 'SELECT name FROM customers WHERE id = $1', values: [4] });
    assert.strictEqual(r.rows[0].name, 'customer 4');

    // transactions
    await a.query('CREATE TEMP TABLE node_tx (v int)');
    await a.query('BEGIN');
    await a.query('INSERT INTO node_tx VALUES ($1)', [1]);
    await a.query('ROLLBACK');
    await a.query('BEGIN');
    await a.query('INSERT INTO node_tx VALUES ($1)', [2]);
    await a.query('COMMIT');
    r = await a.query('SELECT array_agg(v) AS vs FROM node_tx');
    assert.deepStrictEqual(r.rows[0].vs, [2]);
    await a.query('BEGIN');
    await assert.rejects(a.query('SELECT 1/0'), (e) => e.code === '22012');
    await assert.rejects(a.query('SELECT 1'), (e) => e.code === '25P02');
    await a.query('ROLLBACK');

    // LISTEN/NOTIFY with real pids
    const apid = (await a.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    const bpid = (await b.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    assert.strictEqual(a.processID, apid, 'BackendKeyData pid != pg_backend_pid()');
    assert.strictEqual(b.processID, bpid);
    await a.query('LISTEN node_chan');
    const got = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no notification within 5s')), 5000);
      a.on('notification', (m) => { clearTimeout(t); resolve(m); });
    });
    await b.query("SELECT pg_notify('node_chan', $1)", ['hello node']);
    const m = await got;
    assert.strictEqual(m.channel, 'node_chan');
    assert.strictEqual(m.payload, 'hello node');
    assert.strictEqual(m.processId, bpid);
    console.log('OK');
  } finally {
    await a.end();
    await b.end();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
