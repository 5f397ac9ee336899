/*
 * app.js: the sluice dashboard. Plain JavaScript, no build step.
 *
 * Signs in with a bearer token kept in sessionStorage (never a cookie, never in a URL), then
 * polls the JSON API (sessions, approvals, grants), reads the live event stream with fetch()
 * streaming (so the token travels in a header), draws two small charts from /metrics and runs
 * audit searches. Everything shown comes from users (statements, names) and is put on the page
 * with textContent only: this file never assigns HTML.
 */
'use strict';

const TOKEN_KEY = 'sluice.token';
const MAX_EVENTS = 1000; // kept in memory for re-filtering
const MAX_ROWS = 300; // shown in the live table
const POLL_MS = 3000;
const METRICS_MS = 2000;
const CHART_POINTS = 90;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  me: null,
  events: [], // newest last
  bySeq: new Map(), // seq -> event (statement rows updated by statement_end)
  paused: false,
  streamAbort: null,
  lastEventId: '',
  timers: [],
  rate: [], // {allow, deny, review} per second
  latency: [], // {overhead, upstream} mean ms
  prevMetrics: null,
};

const $ = (id) => document.getElementById(id);

/* Build an element; string children become text nodes (never parsed as HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function toast(msg, isError) {
  const t = $('toast');
  t.textContent = msg;
  t.className = isError ? 'error' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

/* ---- API */

class AuthError extends Error {}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + state.token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) throw new AuthError('token rejected');
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) throw new Error((data && data.error) || `${r.status} ${r.statusText}`);
  return data;
}

function handleError(err) {
  if (err instanceof AuthError) {
    signOut('Your token was rejected; sign in again.');
  } else if (err && err.name !== 'AbortError') {
    toast(String(err.message || err), true);
  }
}

/* ---- field helpers: tolerate the shapes the API may use */

function who(o) {
  if (!o) return '';
  if (typeof o.identity === 'string') return o.identity;
  if (o.identity && typeof o.identity === 'object') return o.identity.name || '';
  return o.user || o.name || '';
}
function kindOf(o) {
  if (!o) return '';
  if (o.identity && typeof o.identity === 'object' && o.identity.kind) return o.identity.kind;
  return o.identity_kind || o.kind_of_identity || '';
}
function list(data, key) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data[key])) return data[key];
  return [];
}
function toDate(v) {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v === 'number') return new Date(v > 1e14 ? v / 1000 : v > 1e11 ? v : v * 1000);
  const d = new Date(v);
  return isNaN(d) ? null : d;
}
function fmtTime(v) {
  const d = toDate(v);
  return d ? d.toLocaleTimeString() : '';
}
function fmtWhen(v) {
  const d = toDate(v);
  if (!d) return '';
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  const a = Math.abs(s);
  const txt = a < 60 ? `${a}s` : a < 3600 ? `${Math.round(a / 60)}m` : a < 86400
    ? `${Math.round(a / 3600)}h` : `${Math.round(a / 86400)}d`;
  return s >= 0 ? `in ${txt}` : `${txt} ago`;
}
function badge(text, cls) {
  return el('span', { class: `badge ${cls || text}`, text });
}

/* ---- sign in / out */

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api('GET', '/api/v1/whoami');
  } catch (err) {
    state.token = '';
    $('signin-error').textContent = err instanceof AuthError ? 'Token rejected.' : String(err.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('signin-error').textContent = '';
  $('token').value = '';
  $('signin-panel').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  const roles = [state.me.admin && 'admin', state.me.approver && 'approver'].filter(Boolean);
  $('whoami').textContent = `${state.me.name} (${roles.join(', ') || 'viewer'})`;
  document.body.classList.toggle('can-approve', !!state.me.approver);
  document.body.classList.toggle('can-admin', !!state.me.admin);
  startLive();
}

function signOut(message) {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  state.token = '';
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('app').hidden = true;
  $('signout').hidden = true;
  $('whoami').textContent = '';
  $('conn-state').textContent = '';
  $('signin-panel').hidden = false;
  $('signin-error').textContent = message || '';
}

function startLive() {
  refreshAll();
  state.timers.push(setInterval(refreshAll, POLL_MS));
  state.timers.push(setInterval(pollMetrics, METRICS_MS));
  pollMetrics();
  connectStream();
}

function refreshAll() {
  loadApprovals().catch(handleError);
  loadSessions().catch(handleError);
  loadGrants().catch(handleError);
}

/* ---- live event stream (fetch streaming: the token stays in a header) */

async function connectStream() {
  const ctl = new AbortController();
  state.streamAbort = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    try {
      const headers = { Authorization: 'Bearer ' + state.token, Accept: 'text/event-stream' };
      if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
      const r = await fetch('/api/v1/events', { headers, signal: ctl.signal, cache: 'no-store' });
      if (r.status === 401) throw new AuthError('token rejected');
      if (!r.ok || !r.body) throw new Error(`event stream: ${r.status}`);
      $('conn-state').textContent = 'live';
      $('conn-state').className = 'live';
      delay = 1000;
      await readStream(r.body.getReader());
    } catch (err) {
      if (ctl.signal.aborted) return;
      if (err instanceof AuthError) return handleError(err);
    }
    $('conn-state').textContent = 'reconnecting…';
    $('conn-state').className = 'muted';
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readStream(reader) {
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('data: ')) data += line.slice(6);
        else if (line.startsWith('id: ')) state.lastEventId = line.slice(4);
        else if (line.startsWith(': dropped')) toast(`Live stream fell behind: ${line.slice(2)} events`, true);
      }
      if (data) {
        try { onEvent(JSON.parse(data)); } catch (_) { /* not JSON: ignore */ }
      }
    }
  }
}

function onEvent(ev) {
  const k = ev.kind || '';
  if (k.startsWith('approval_') || k.startsWith('grant_')) {
    loadApprovals().catch(handleError);
    loadGrants().catch(handleError);
  }
  if (k === 'session_start' || k === 'session_end') loadSessions().catch(handleError);
  if (k === 'statement_end' && ev.ref && state.bySeq.has(ev.ref)) {
    // completion of a statement already shown: update rows, time, masking
    const s = state.bySeq.get(ev.ref);
    Object.assign(s, { rows: ev.rows, duration_us: ev.duration_us, masked: ev.masked,
      sqlstate: ev.sqlstate, done: true });
    if (s.row) fillStreamRow(s.row, s);
    return;
  }
  if (k !== 'statement' && k !== 'statement_end' && k !== 'auth_failure') return;
  state.events.push(ev);
  if (ev.seq !== undefined) state.bySeq.set(ev.seq, ev);
  if (state.events.length > MAX_EVENTS) {
    const old = state.events.shift();
    state.bySeq.delete(old.seq);
  }
  $('stream-count').textContent = String(state.events.length);
  if (!state.paused && passes(ev)) addStreamRow(ev, true);
}

function filters() {
  return {
    identity: $('f-identity').value.trim().toLowerCase(),
    kind: $('f-kind').value,
    target: $('f-target').value.trim().toLowerCase(),
    decision: $('f-decision').value,
  };
}

function passes(ev, f) {
  f = f || filters();
  if (f.identity && !who(ev).toLowerCase().includes(f.identity)) return false;
  if (f.kind && kindOf(ev) !== f.kind) return false;
  if (f.target && !(ev.target || '').toLowerCase().includes(f.target)) return false;
  if (f.decision && ev.decision !== f.decision) return false;
  return true;
}

function fillStreamRow(tr, ev) {
  const masked = el('td', { class: 'masked' });
  if (ev.masked && typeof ev.masked === 'object') {
    for (const [det, n] of Object.entries(ev.masked)) {
      if (n > 0) masked.append(badge(`${det} ×${n}`, 'mask'));
    }
  }
  const dec = ev.decision || (ev.kind === 'auth_failure' ? 'auth failure' : '');
  tr.replaceChildren(
    el('td', { class: 'time', text: fmtTime(ev.time || ev.time_us) }),
    el('td', {}, who(ev), ' ', kindOf(ev) ? badge(kindOf(ev), 'kind') : null),
    el('td', { text: ev.target || '' }),
    el('td', {}, dec ? badge(dec, dec === 'auth failure' ? 'deny' : dec) : null,
      ev.rule ? el('span', { class: 'rule muted', text: ev.rule }) : null),
    el('td', { class: 'sql', text: ev.statement || ev.detail || '', title: ev.fingerprint || '' }),
    el('td', { class: 'num', text: ev.rows !== undefined ? String(ev.rows) : '' }),
    el('td', { class: 'num', text: ev.duration_us !== undefined ? (ev.duration_us / 1000).toFixed(1) : '' }),
    masked,
  );
}

function addStreamRow(ev, atTop) {
  const tbody = $('stream').tBodies[0];
  const tr = el('tr', { dataset: { seq: ev.seq !== undefined ? String(ev.seq) : '' } });
  fillStreamRow(tr, ev);
  ev.row = tr;
  if (atTop) tbody.prepend(tr); else tbody.append(tr);
  while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
}

function redrawStream() {
  const tbody = $('stream').tBodies[0];
  tbody.replaceChildren();
  const f = filters();
  let shown = 0;
  for (let i = state.events.length - 1; i >= 0 && shown < MAX_ROWS; i--) {
    const ev = state.events[i];
    if (passes(ev, f)) { addStreamRow(ev, false); shown++; }
  }
}

/* ---- approvals, sessions, grants */

function setCount(id, n) {
  $(id + '-count').textContent = String(n);
  $(id + '-empty').hidden = n > 0;
}

async function loadApprovals() {
  const items = list(await api('GET', '/api/v1/approvals?state=pending'), 'approvals');
  const tbody = $('approvals').tBodies[0];
  tbody.replaceChildren(...items.map((a) => el('tr', { dataset: { id: a.id } },
    el('td', { text: fmtWhen(a.created_at || a.time) }),
    el('td', {}, who(a), ' ', kindOf(a) ? badge(kindOf(a), 'kind') : null),
    el('td', { text: a.target || '' }),
    el('td', { class: 'sql', text: a.statement || '', title: a.fingerprint || '' }),
    el('td', {}, a.rule ? el('b', { text: a.rule }) : null, ' ', a.reason || ''),
    el('td', { text: fmtWhen(a.expires_at) }),
    el('td', { class: 'actions' },
      el('button', { class: 'approve', text: 'Approve', disabled: !state.me?.approver,
        title: state.me?.approver ? '' : 'approver role required',
        onclick: () => decide(a.id, 'approve') }),
      el('button', { class: 'deny', text: 'Deny', disabled: !state.me?.approver,
        onclick: () => decide(a.id, 'deny') })),
  )));
  setCount('approvals', items.length);
}

async function decide(id, action) {
  try {
    await api('POST', `/api/v1/approvals/${encodeURIComponent(id)}/${action}`, {});
    toast(`${action === 'approve' ? 'Approved' : 'Denied'} ${id}`);
  } catch (err) {
    handleError(err);
  }
  loadApprovals().catch(handleError);
  loadGrants().catch(handleError);
}

/* A button that needs a second click within 3 s: no confirm() dialogs. */
function twoStep(label, confirmLabel, action, enabled) {
  const b = el('button', { class: 'danger', text: label, disabled: !enabled });
  b.addEventListener('click', () => {
    if (b.dataset.armed) {
      b.disabled = true;
      action();
      return;
    }
    b.dataset.armed = '1';
    b.textContent = confirmLabel;
    setTimeout(() => { delete b.dataset.armed; b.textContent = label; }, 3000);
  });
  return b;
}

async function loadSessions() {
  const items = list(await api('GET', '/api/v1/sessions'), 'sessions');
  const tbody = $('sessions').tBodies[0];
  tbody.replaceChildren(...items.map((s) => el('tr', { dataset: { id: String(s.id) } },
    el('td', { text: who(s) }),
    el('td', {}, kindOf(s) || s.kind ? badge(kindOf(s) || s.kind, 'kind') : null),
    el('td', { text: s.target || '' }),
    el('td', { text: [s.client_addr || s.client || '', s.application_name ? `(${s.application_name})` : ''].join(' ') }),
    el('td', { text: fmtWhen(s.started_at || s.since) }),
    el('td', { class: 'num', text: String(s.statements ?? '') }),
    el('td', { class: 'num', text: String(s.rows ?? '') }),
    el('td', { class: 'actions' }, twoStep('End', 'Really end?', () => endSession(s.id),
      !!state.me?.admin)),
  )));
  setCount('sessions', items.length);
}

async function endSession(id) {
  try {
    await api('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`);
    toast(`Ended session ${id}`);
  } catch (err) {
    handleError(err);
  }
  loadSessions().catch(handleError);
}

async function loadGrants() {
  const items = list(await api('GET', '/api/v1/grants'), 'grants');
  const tbody = $('grants').tBodies[0];
  tbody.replaceChildren(...items.map((g) => el('tr', { dataset: { id: g.id } },
    el('td', { text: g.scope === 'group' ? `group ${g.group || ''}` : who(g) }),
    el('td', { text: g.target || '' }),
    el('td', { class: 'mono', text: (g.fingerprint || '').slice(0, 16), title: g.fingerprint || '' }),
    el('td', { text: fmtWhen(g.expires_at) }),
    el('td', { class: 'num', text: String(g.uses_left ?? '') }),
    el('td', { class: 'num', text: g.max_rows ? String(g.max_rows) : '—' }),
    el('td', { text: g.approver || '' }),
    el('td', { class: 'actions' }, twoStep('Revoke', 'Really revoke?', () => revokeGrant(g.id),
      !!(state.me?.admin || state.me?.approver))),
  )));
  setCount('grants', items.length);
}

async function revokeGrant(id) {
  try {
    await api('DELETE', `/api/v1/grants/${encodeURIComponent(id)}`);
    toast(`Revoked grant ${id}`);
  } catch (err) {
    handleError(err);
  }
  loadGrants().catch(handleError);
}

/* ---- audit search and chain state */

function showChain(c) {
  const b = $('chain-state');
  if (!c) { b.textContent = ''; b.className = 'badge'; return; }
  const ok = c.ok === true || c.valid === true;
  const n = c.events ?? c.checked;
  const broken = c.first_broken ?? c.first_broken_seq ?? c.broken_at;
  b.textContent = ok ? `chain verified${n !== undefined ? ` (${n} events)` : ''}`
    : `chain BROKEN${broken !== undefined && broken !== null ? ` at #${broken}` : ''}${c.message ? `: ${c.message}` : ''}`;
  b.className = 'badge ' + (ok ? 'allow' : 'deny');
}

async function searchAudit(e) {
  if (e) e.preventDefault();
  const q = new URLSearchParams();
  const add = (k, v) => { if (v) q.set(k, v); };
  add('identity', $('a-identity').value.trim());
  add('decision', $('a-decision').value);
  add('kind', $('a-kind').value);
  const since = $('a-since').value;
  if (since) add('since', new Date(since).toISOString());
  add('limit', $('a-limit').value);
  try {
    const data = await api('GET', '/api/v1/audit?' + q.toString());
    const items = list(data, 'events');
    $('audit').tBodies[0].replaceChildren(...items.map((ev) => el('tr', {},
      el('td', { class: 'num', text: String(ev.seq ?? '') }),
      el('td', { text: (toDate(ev.time || ev.time_us) || '').toLocaleString?.() || '' }),
      el('td', { text: ev.kind || '' }),
      el('td', {}, who(ev), ' ', kindOf(ev) ? badge(kindOf(ev), 'kind') : null),
      el('td', { text: ev.target || '' }),
      el('td', {}, ev.decision ? badge(ev.decision) : null),
      el('td', { class: 'sql', text: ev.statement || ev.detail || '' }),
    )));
    if (data && data.chain) showChain(data.chain);
  } catch (err) {
    handleError(err);
  }
}

async function verifyChain() {
  $('chain-state').textContent = 'verifying…';
  try {
    showChain(await api('GET', '/api/v1/audit/verify'));
  } catch (err) {
    $('chain-state').textContent = '';
    handleError(err);
  }
}

/* ---- charts from /metrics */

function parseMetrics(text) {
  const m = { allow: 0, deny: 0, review: 0, ovSum: 0, ovCount: 0, upSum: 0, upCount: 0 };
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const sp = line.lastIndexOf(' ');
    const name = line.slice(0, sp);
    const v = Number(line.slice(sp + 1));
    if (name.startsWith('sluice_statements_total{')) {
      const d = /decision="([a-z]+)"/.exec(name);
      if (d && d[1] in m) m[d[1]] += v;
    } else if (name === 'sluice_statement_overhead_seconds_sum') m.ovSum = v;
    else if (name === 'sluice_statement_overhead_seconds_count') m.ovCount = v;
    else if (name === 'sluice_upstream_latency_seconds_sum') m.upSum = v;
    else if (name === 'sluice_upstream_latency_seconds_count') m.upCount = v;
  }
  m.at = performance.now();
  return m;
}

async function pollMetrics() {
  let m;
  try {
    const r = await fetch('/metrics', { cache: 'no-store' });
    if (!r.ok) return;
    m = parseMetrics(await r.text());
  } catch (_) {
    return;
  }
  const p = state.prevMetrics;
  state.prevMetrics = m;
  if (!p) return;
  const dt = (m.at - p.at) / 1000 || 1;
  const rate = (k) => Math.max(0, (m[k] - p[k]) / dt);
  const mean = (s, c) => (m[c] - p[c] > 0 ? ((m[s] - p[s]) / (m[c] - p[c])) * 1000 : 0);
  push(state.rate, { allow: rate('allow'), deny: rate('deny'), review: rate('review') });
  push(state.latency, { overhead: mean('ovSum', 'ovCount'), upstream: mean('upSum', 'upCount') });
  drawChart($('chart-rate'), state.rate, ['allow', 'deny', 'review'], '/s');
  drawChart($('chart-latency'), state.latency, ['overhead', 'upstream'], ' ms');
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > CHART_POINTS) arr.shift();
}

function drawChart(canvas, points, keys, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.body);
  let max = 0;
  for (const p of points) for (const k of keys) max = Math.max(max, p[k]);
  max = max > 0 ? max * 1.15 : 1;
  const left = 4;
  const top = 14;
  const bottom = h - 4;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = css.getPropertyValue('--muted') || '#888';
  g.fillText(`${max < 10 ? max.toFixed(2) : Math.round(max)}${unit}`, left, 11);
  g.strokeStyle = css.getPropertyValue('--grid') || '#ddd';
  g.beginPath();
  g.moveTo(left, bottom + 0.5);
  g.lineTo(w, bottom + 0.5);
  g.stroke();
  const step = (w - left) / (CHART_POINTS - 1);
  const x0 = w - (points.length - 1) * step;
  for (const k of keys) {
    g.strokeStyle = css.getPropertyValue(`--${k}`) || '#333';
    g.lineWidth = 1.5;
    g.beginPath();
    points.forEach((p, i) => {
      const x = x0 + i * step;
      const y = bottom - (p[k] / max) * (bottom - top);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

/* ---- wiring */

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value.trim());
  });
  $('signout').addEventListener('click', () => signOut());
  for (const id of ['f-identity', 'f-target']) $(id).addEventListener('input', redrawStream);
  for (const id of ['f-kind', 'f-decision']) $(id).addEventListener('change', redrawStream);
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    if (!state.paused) redrawStream();
  });
  $('clear').addEventListener('click', () => {
    state.events = [];
    state.bySeq.clear();
    $('stream-count').textContent = '0';
    redrawStream();
  });
  $('audit-form').addEventListener('submit', searchAudit);
  $('verify').addEventListener('click', verifyChain);
  if (state.token) signIn(state.token);
});
