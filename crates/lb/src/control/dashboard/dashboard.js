// lb's dashboard: reads the admin API's /events feed (server-sent events, one `snapshot` a second) and
// shows it; its buttons call the same admin API that `curl` does. No framework, no build step.
//
// Security (see crates/lb/src/control/dashboard.rs): the token, when the admin API has one, comes from
// the URL fragment (#token=...) or the login form, stays in this tab's sessionStorage, and is sent as
// `Authorization: Bearer` by this script only. Every value from the server is written with
// textContent, never as HTML.
'use strict';

const TOKEN_KEY = 'lb-admin-token';
const HISTORY = 60; // chart points: one a second, so the last minute
const KEPT_DECISIONS = 30;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

const groups = new Map(); // upstream name -> { section, tbody, chart, rows: Map(addr -> row), history: [] }

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    // Out of the address bar and this history entry: it is not something to bookmark or share.
    history.replaceState(null, '', location.pathname + location.search);
  }
}

function headers(json) {
  const h = {};
  const t = token();
  if (t) h['Authorization'] = 'Bearer ' + t;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function setStatus(text, cls) {
  const s = document.getElementById('status');
  s.textContent = text;
  s.className = 'status ' + (cls || '');
}

function say(text, isError) {
  const m = document.getElementById('message');
  m.textContent = text;
  m.className = 'message' + (isError ? ' error' : '');
}

// --- the feed ---------------------------------------------------------------------------------------

async function follow() {
  for (;;) {
    try {
      const res = await fetch('/events', { headers: headers(false), cache: 'no-store' });
      if (res.status === 401) {
        setStatus('token needed', 'down');
        document.getElementById('login').hidden = false;
        return;
      }
      if (!res.ok) throw new Error('/events answered ' + res.status + ': ' + (await res.text()));
      setStatus('live', 'live');
      await readEvents(res.body, onEvent);
      setStatus('reconnecting', 'down');
    } catch (e) {
      setStatus('reconnecting', 'down');
      say(String(e.message || e), true);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// The text/event-stream format: events separated by a blank line, `event:` and `data:` fields, lines
// starting with `:` are comments.
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        if (field === 'data') data.push(value);
      }
      if (data.length) handle(event, data.join('\n'));
    }
  }
}

function onEvent(event, data) {
  if (event !== 'snapshot') return;
  const snapshot = JSON.parse(data);
  const seen = new Set();
  for (const u of snapshot.upstreams) {
    seen.add(u.name);
    renderUpstream(u);
  }
  for (const [name, g] of groups) {
    if (!seen.has(name)) {
      g.section.remove();
      groups.delete(name);
    }
  }
  renderDecisions(snapshot.decisions, snapshot.decisions_lost);
}

// --- one upstream -----------------------------------------------------------------------------------

const COLUMNS = ['backend', 'state', 'weight', 'effective', 'share of weight', 'in flight', 'requests',
  'req/s', 'errors', 'p50', 'p99', 'EWMA', ''];

function group(name) {
  let g = groups.get(name);
  if (g) return g;
  const section = el('section', { class: 'upstream', 'data-upstream': name });
  const head = el('div', { class: 'upstream-head' });
  const title = el('h2');
  title.textContent = 'upstream ' + name;
  const algorithm = el('span', { class: 'algorithm' });
  const panic = el('span', { class: 'panic', hidden: '' });
  panic.textContent = 'PANIC: too few healthy backends, so health is ignored';
  head.append(title, algorithm, panic);
  const headRow = el('tr');
  for (const c of COLUMNS) {
    const th = el('th', c === 'state' ? { class: 'state' } : {});
    th.textContent = c;
    headRow.append(th);
  }
  const tbody = el('tbody');
  const table = el('table', {}, el('thead', {}, headRow), tbody);
  const chart = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  chart.setAttribute('class', 'chart');
  chart.setAttribute('viewBox', '0 0 600 170');
  chart.setAttribute('preserveAspectRatio', 'none');
  const chartTitle = el('p', { class: 'hint' });
  chartTitle.textContent = "Each backend's share of this upstream's responses, each second, over the last minute.";
  section.append(head, table, addForm(name), chartTitle, chart);
  document.getElementById('upstreams').append(section);
  g = { section, tbody, chart, algorithm, panic, rows: new Map(), history: [] };
  groups.set(name, g);
  return g;
}

function addForm(upstream) {
  const addr = el('input', { name: 'addr', placeholder: '127.0.0.1:9004', required: '' });
  const weight = el('input', { name: 'weight', type: 'number', min: '1', value: '1' });
  const button = el('button', { type: 'submit' });
  button.textContent = 'add backend';
  const form = el('form', { class: 'add' }, addr, ' weight ', weight, ' ', button);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = JSON.stringify({ addr: addr.value.trim(), weight: Number(weight.value) || 1 });
    act('POST', backendsPath(upstream), body, 'added ' + addr.value.trim()).then((ok) => {
      if (ok) addr.value = '';
    });
  });
  return form;
}

function renderUpstream(u) {
  const g = group(u.name);
  g.algorithm.textContent = u.algorithm;
  g.panic.hidden = !u.panic;
  const addrs = u.backends.map((b) => b.addr);
  for (const [addr, row] of g.rows) {
    if (!addrs.includes(addr)) {
      row.tr.remove();
      g.rows.delete(addr);
    }
  }
  u.backends.forEach((b, i) => renderBackend(g, u.name, b, i));
  // The order of the snapshot, whatever order rows were made in.
  for (const addr of addrs) g.tbody.append(g.rows.get(addr).tr);
  const total = u.backends.reduce((s, b) => s + b.last_tick, 0);
  const point = {};
  for (const b of u.backends) point[b.addr] = total > 0 ? (100 * b.last_tick) / total : null;
  g.history.push(point);
  if (g.history.length > HISTORY) g.history.shift();
  drawChart(g, addrs);
}

function backendsPath(upstream) {
  return '/upstreams/' + encodeURIComponent(upstream) + '/backends';
}

function backendPath(upstream, addr) {
  return backendsPath(upstream) + '/' + encodeURIComponent(addr);
}

function renderBackend(g, upstream, b, index) {
  let row = g.rows.get(b.addr);
  if (!row) {
    row = makeRow(upstream, b.addr);
    g.rows.set(b.addr, row);
  }
  row.swatch.style.background = COLORS[index % COLORS.length];
  const state = stateText(b);
  row.cells.state.textContent = state;
  row.cells.state.className = 'state ' + b.health;
  row.tr.dataset.health = b.health;
  row.cells.weight.textContent = String(b.weight);
  row.cells.effective.textContent = fixed(b.effective_weight, 2);
  row.cells.share.textContent = fixed(b.weight_share, 1) + '%';
  row.cells.inflight.textContent = String(b.in_flight);
  row.cells.requests.textContent = String(b.requests);
  row.cells.rps.textContent = fixed(b.rps, 1);
  row.cells.errors.textContent = b.error_rate === null ? '-' : fixed(100 * b.error_rate, 1) + '%';
  row.cells.p50.textContent = ms(b.p50_ms);
  row.cells.p99.textContent = ms(b.p99_ms);
  row.cells.ewma.textContent = ms(b.ewma_ms);
  const draining = b.health === 'draining';
  row.drain.textContent = draining ? 'undrain' : 'drain';
  row.drain.className = draining ? 'undrain' : 'drain';
  if (document.activeElement !== row.weight) row.weight.value = String(b.weight);
}

function stateText(b) {
  let s = {
    healthy: 'healthy',
    unhealthy: 'unhealthy (failing health checks)',
    ejected: 'ejected' + (b.ejected_for_s === null ? '' : ' (' + fixed(b.ejected_for_s, 0) + ' s left)'),
    draining: 'draining',
  }[b.health] || b.health;
  if (b.slow_start !== null) s += ', slow start at ' + fixed(100 * b.slow_start, 0) + '%';
  if (b.consecutive_failures > 0) s += ', ' + b.consecutive_failures + ' failures in a row';
  return s;
}

function makeRow(upstream, addr) {
  const tr = el('tr', { 'data-addr': addr });
  const swatch = el('span', { class: 'swatch' });
  const name = el('td', { class: 'addr' }, swatch, addr);
  const cells = {};
  tr.append(name);
  for (const key of ['state', 'weight', 'effective', 'share', 'inflight', 'requests', 'rps', 'errors', 'p50',
    'p99', 'ewma']) {
    cells[key] = el('td', { class: key });
    tr.append(cells[key]);
  }
  const drain = el('button', { type: 'button' });
  drain.addEventListener('click', () => {
    const undo = drain.textContent === 'undrain';
    act('POST', backendPath(upstream, addr) + (undo ? '/undrain' : '/drain'), null,
      (undo ? 'undrained ' : 'draining ') + addr);
  });
  const weight = el('input', { type: 'number', min: '1', class: 'weight', 'aria-label': 'weight of ' + addr });
  const setWeight = el('button', { type: 'button', class: 'set-weight' });
  setWeight.textContent = 'set weight';
  setWeight.addEventListener('click', () => {
    act('PATCH', backendPath(upstream, addr), JSON.stringify({ weight: Number(weight.value) }),
      'weight of ' + addr + ' set to ' + weight.value);
  });
  const remove = el('button', { type: 'button', class: 'remove' });
  remove.textContent = 'remove';
  remove.addEventListener('click', () => {
    if (confirm('Remove ' + addr + ' from ' + upstream + '?')) {
      act('DELETE', backendPath(upstream, addr), null, 'removed ' + addr);
    }
  });
  tr.append(el('td', { class: 'actions' }, drain, ' ', weight, ' ', setWeight, ' ', remove));
  return { tr, swatch, cells, drain, weight };
}

// A change through the admin API; its effect shows in the next snapshot.
async function act(method, path, body, done) {
  try {
    const res = await fetch(path, { method, headers: headers(body !== null), body: body === null ? undefined : body });
    if (!res.ok) {
      let why = res.status + ' ' + res.statusText;
      try {
        why = (await res.json()).error || why;
      } catch (_) { /* not JSON */ }
      say(method + ' ' + path + ': ' + why, true);
      return false;
    }
    say(done, false);
    return true;
  } catch (e) {
    say(method + ' ' + path + ': ' + (e.message || e), true);
    return false;
  }
}

// --- the chart: one line per backend, its share (0-100%) each second --------------------------------

function drawChart(g, addrs) {
  const svg = g.chart;
  const W = 600, H = 170, left = 30, top = 8, bottom = 16;
  const plotH = H - top - bottom;
  while (svg.firstChild) svg.firstChild.remove();
  const ns = 'http://www.w3.org/2000/svg';
  for (const pct of [0, 50, 100]) {
    const y = top + plotH * (1 - pct / 100);
    const line = document.createElementNS(ns, 'line');
    line.setAttribute('class', 'grid');
    for (const [k, v] of [['x1', left], ['x2', W], ['y1', y], ['y2', y]]) line.setAttribute(k, v);
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', 2);
    label.setAttribute('y', y + 3);
    label.textContent = pct + '%';
    svg.append(line, label);
  }
  const step = (W - left) / (HISTORY - 1);
  const offset = HISTORY - g.history.length;
  addrs.forEach((addr, i) => {
    const points = [];
    const color = COLORS[i % COLORS.length];
    g.history.forEach((p, j) => {
      const share = p[addr];
      // A second without traffic has no share: a gap in the line's dots.
      if (share === null || share === undefined) return;
      const [x, y] = [left + (offset + j) * step, top + plotH * (1 - share / 100)];
      points.push(x.toFixed(1) + ',' + y.toFixed(1));
      // A dot per second, so a single busy second shows too (a one-point line draws nothing).
      const dot = document.createElementNS(ns, 'circle');
      for (const [k, v] of [['cx', x], ['cy', y], ['r', 2.5], ['fill', color]]) dot.setAttribute(k, v);
      svg.append(dot);
    });
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('data-addr', addr);
    line.setAttribute('stroke', color);
    line.setAttribute('points', points.join(' '));
    svg.append(line);
  });
}

// --- decisions --------------------------------------------------------------------------------------

function renderDecisions(decisions, lost) {
  const list = document.getElementById('decisions');
  for (const d of decisions) {
    const li = el('li', { class: 'decision' });
    const when = el('span', { class: 'when' });
    when.textContent = new Date(d.at_ms).toLocaleTimeString();
    const code = el('span', { class: 'code' + (d.status >= 500 ? ' bad' : '') });
    code.textContent = String(d.status);
    const to = el('span', { class: 'to' });
    to.textContent = d.upstream + ' -> ' + (d.backend || '(none)');
    const reason = el('span', { class: 'reason' });
    reason.textContent = d.reason;
    li.append(when, code, to, reason);
    const extra = [];
    if (d.skipped.length) extra.push('skipped ' + d.skipped.join(', '));
    if (d.attempts > 1) extra.push(d.attempts + ' attempts');
    if (d.retries.length) extra.push('retried: ' + d.retries.join('; '));
    if (extra.length) {
      const e = el('span', { class: 'extra' });
      e.textContent = extra.join(' | ');
      li.append(e);
    }
    list.prepend(li);
  }
  while (list.children.length > KEPT_DECISIONS) list.lastChild.remove();
  const note = document.getElementById('lost');
  if (lost > 0) {
    note.hidden = false;
    note.textContent = lost + ' decisions were not shown: this page fell behind.';
  }
}

function fixed(v, digits) {
  return Number(v).toFixed(digits);
}

function ms(v) {
  return v === null || v === undefined ? '-' : fixed(v, v < 10 ? 2 : 1) + ' ms';
}

document.addEventListener('DOMContentLoaded', () => {
  takeTokenFromFragment();
  document.getElementById('login').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById('token').value.trim());
    document.getElementById('login').hidden = true;
    follow();
  });
  follow();
});
