/*
 * dashboard.test.js: the sluice dashboard in a real browser (Debian's chromium, headless,
 * driven by playwright-core): sign in with a token, see a statement appear in the live
 * stream, approve a pending request with its button, save a screenshot.
 *
 * The harness that runs it has started PostgreSQL and sluice, made a client run a statement
 * and left another waiting for approval; it passes what to expect in the environment:
 *   SLUICE_ADMIN_URL     dashboard URL, e.g. http://127.0.0.1:7480/ (test skipped when unset)
 *   SLUICE_ADMIN_TOKEN   an admin+approver token
 *   SLUICE_EXPECT_SQL    a substring of a statement that shows up in the live stream
 *   SLUICE_APPROVAL_ID   id of a pending request to approve (optional)
 *   SLUICE_SCREENSHOT    where to save the screenshot (default: dashboard.png)
 *   CHROMIUM             browser binary (default: /usr/bin/chromium)
 * The harness then checks that the waiting client proceeded.
 *
 * Run: cd tests/integration/browser && npm install && node --test dashboard.test.js
 */
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { chromium } = require('playwright-core');

const env = process.env;
const url = env.SLUICE_ADMIN_URL;

test('dashboard: sign in, live statement, approve, screenshot', { skip: !url && 'SLUICE_ADMIN_URL not set', timeout: 90000 }, async () => {
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const problems = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('dialog', (d) => {
      problems.push(`unexpected dialog: ${d.message()}`);
      d.dismiss();
    });

    await page.goto(url);
    await page.fill('#token', env.SLUICE_ADMIN_TOKEN || '');
    await page.click('#signin');
    await page.waitForSelector('#app', { state: 'visible', timeout: 10000 });
    const me = await page.textContent('#whoami');
    assert.ok(me && me.length > 0, 'signed-in identity shown');
    // the token is kept for the tab only, never as a cookie
    assert.deepStrictEqual(await page.context().cookies(), []);

    // a statement appears in the live stream
    if (env.SLUICE_EXPECT_SQL) {
      const row = page.locator('#stream tbody tr', { hasText: env.SLUICE_EXPECT_SQL }).first();
      await row.waitFor({ timeout: 15000 });
      // statements are shown as text: no element is ever created from their content
      const injected = await page.$$eval('#stream td.sql *, #approvals td.sql *', (n) => n.length);
      assert.strictEqual(injected, 0, 'statement text created elements');
    }

    // approve the pending request with the button
    if (env.SLUICE_APPROVAL_ID) {
      const id = env.SLUICE_APPROVAL_ID;
      const sel = `#approvals tbody tr[data-id="${id.replace(/["\\]/g, '\\$&')}"]`;
      await page.waitForSelector(sel, { timeout: 15000 });
      await page.screenshot({ path: shotPath('before-approve'), fullPage: true });
      await page.click(`${sel} button.approve`);
      await page.waitForSelector('#toast:not([hidden])', { timeout: 10000 });
      const toast = await page.textContent('#toast');
      assert.match(toast, new RegExp(`Approved ${id}`));
      await page.waitForSelector(sel, { state: 'detached', timeout: 10000 });
    }

    await page.screenshot({ path: shotPath(), fullPage: true });
  } finally {
    await browser.close();
  }
  assert.deepStrictEqual(problems, [], problems.join('\n'));
});

function shotPath(suffix) {
  const p = env.SLUICE_SCREENSHOT || 'dashboard.png';
  return suffix ? p.replace(/(\.png)?$/, `-${suffix}.png`) : p;
}
