// ferry console: plain JavaScript, no build step, no dependencies. Served by `ferry serve`
// at `/` (embedded in the binary). Everything goes through the HTTP API in docs/api.md.
'use strict';

// ---------------------------------------------------------------------------------------
// Helpers: DOM, the API, errors, server-sent events.

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** An element: h('td', {class: 'num'}, 'text', child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** `el`'s children set to `children`, leaving out the absent ones (null, undefined, false):
 * `replaceChildren` itself would show them as the text "null". */
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An error as the API gives it: `{"error": {"code", "message"}}` and the HTTP status. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const TOKEN_KEY = 'ferry.token';
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

function headers(json) {
  const out = {};
  if (json) out['Content-Type'] = 'application/json';
  const t = token();
  if (t) out.Authorization = 'Bearer ' + t;
  return out;
}

async function errorOf(res) {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.code) {
      return new ApiError(res.status, body.error.code, body.error.message || '');
    }
  } catch (_) { /* not JSON: shown as text */ }
  return new ApiError(res.status, 'http_' + res.status, text || res.statusText);
}

/**
 * Calls the API; answers the parsed JSON (null for 204), or the Response when `raw`.
 * Throws ApiError for an error answer or an unreachable server; AbortError when aborted.
 */
async function api(method, path, body, opts = {}) {
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'cannot reach ferry serve: ' + e.message);
  }
  if (!res.ok) throw await errorOf(res);
  if (opts.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

/** Shows `err` in the error box `box` (code and message as the API gave them); null hides it. */
function showError(box, err) {
  if (!box) return;
  if (!err) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const code = err.code || err.name || 'error';
  put(box,
    h('span', { class: 'code' }, code),
    h('span', { class: 'message' }, err.message || String(err)),
    err.status ? h('span', { class: 'status' }, 'HTTP ' + err.status) : null,
  );
  if (code === 'unauthorized') {
    box.append(h('span', { class: 'status' }, ' (paste the bearer token at the top right)'));
  }
  box.hidden = false;
}

/** Reads a server-sent event stream from a fetch Response; calls onEvent(name, data). */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') name = v;
        else if (field === 'data') data.push(v);
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(0, 'invalid_json', `${what}: ${e.message}`);
  }
}

const fmtInt = (n) => (n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US'));
function fmtDuration(s) {
  if (s === null || s === undefined) return '—';
  s = Math.floor(s);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}
function fmtUs(us) {
  if (us >= 1000) return (us / 1000).toFixed(us >= 10000 ? 0 : 1) + ' ms';
  return (us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(1) : us.toFixed(2)) + ' µs';
}
const fmtTick = (us) => (us >= 1000 ? us / 1000 + ' ms' : +us.toPrecision(1) + ' µs');
function fmtBytes(b) {
  if (b >= 1 << 20) return +(b / (1 << 20)).toFixed(1) + ' MiB';
  if (b >= 1 << 10) return +(b / (1 << 10)).toFixed(1) + ' KiB';
  return b + ' B';
}
const badge = (state) => h('span', { class: 'badge ' + state }, String(state).replace('_', ' '));

function setProgress(bar, fraction, cls) {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  bar.setAttribute('aria-valuenow', String(pct));
  $('.fill', bar).style.width = pct + '%';
  bar.classList.remove('done', 'failed');
  if (cls) bar.classList.add(cls);
}

function progressBar(fraction, extra) {
  const bar = h('div', { class: 'progress ' + (extra || ''), role: 'progressbar',
    'aria-valuemin': 0, 'aria-valuemax': 100 }, h('div', { class: 'fill' }));
  setProgress(bar, fraction);
  return bar;
}

/** Base64 images found in `value` (attachments' data_base64, data: URLs, bare PNG/JPEG). */
function imagesIn(value, out = []) {
  if (out.length >= 8 || value === null || value === undefined) return out;
  if (typeof value === 'string') {
    if (value.startsWith('data:image/')) out.push(value);
    else if (value.startsWith('iVBORw0KGgo')) out.push('data:image/png;base64,' + value);
    else if (value.startsWith('/9j/')) out.push('data:image/jpeg;base64,' + value);
  } else if (Array.isArray(value)) {
    value.forEach((v) => imagesIn(v, out));
  } else if (typeof value === 'object') {
    Object.values(value).forEach((v) => imagesIn(v, out));
  }
  return out;
}

/** `value` as short JSON text, long base64 strings elided. */
function brief(value, max = 160) {
  const text = JSON.stringify(value, (k, v) =>
    typeof v === 'string' && v.length > 64 && /^[A-Za-z0-9+/=]+$/.test(v) ? `<${v.length} base64 chars>` : v);
  return text && text.length > max ? text.slice(0, max) + '…' : text;
}

// ---------------------------------------------------------------------------------------
// Views and navigation.

const views = {};
let current = null;

function show(name) {
  if (!views[name]) name = 'workers';
  current = name;
  for (const v of $$('.view')) v.hidden = v.id !== 'view-' + name;
  for (const a of $$('header nav a')) a.classList.toggle('active', a.dataset.view === name);
  views[name].enter?.();
}

// ---------------------------------------------------------------------------------------
// Workers: a table from GET /api/workers/status, kept live by GET /api/events.

const workers = {
  rows: new Map(), // id -> {status, tr, cells, at}
  types: [],
  refreshTimer: null,
};

const STATE_OF_KIND = {
  started: 'starting', ready: 'ready', unhealthy: 'unhealthy', crashed: 'restarting',
  restarted: 'restarting', stopped: 'stopped',
};

async function refreshWorkers() {
  const box = $('#view-workers .error');
  try {
    const { workers: list } = await api('GET', '/api/workers/status');
    showError(box, null);
    const seen = new Set();
    const now = performance.now();
    for (const s of list) {
      seen.add(s.id);
      upsertWorker(s, now);
    }
    for (const [id, row] of workers.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        workers.rows.delete(id);
      }
    }
    const types = [...new Set(list.map((s) => s.worker_type))].sort();
    if (types.join() !== workers.types.join()) {
      workers.types = types;
      fillWorkerTypes();
    }
    $('#workers-empty').hidden = list.length > 0;
    return list;
  } catch (e) {
    showError(box, e);
    return null;
  }
}

function upsertWorker(s, now) {
  let row = workers.rows.get(s.id);
  if (!row) {
    const cells = {};
    const td = (key, cls) => (cells[key] = h('td', { class: cls, 'data-col': key }));
    const restart = h('button', { type: 'button', title: 'kill and replace this worker' }, 'Restart');
    restart.addEventListener('click', () => restartWorker(s.id, restart));
    const tr = h('tr', { 'data-worker': s.id },
      td('id'), td('type'), td('state'), td('pid', 'num'), td('device'), td('in_flight', 'num'),
      td('served', 'num'), td('restarts', 'num'), td('last_error', 'err'), td('uptime', 'num'),
      h('td', {}, restart));
    row = { tr, cells };
    workers.rows.set(s.id, row);
    const body = $('#workers-table tbody');
    const after = [...workers.rows.keys()].sort().indexOf(s.id);
    body.insertBefore(tr, body.children[after] || null);
  }
  row.status = s;
  row.at = now;
  renderWorker(row);
}

function renderWorker(row) {
  const s = row.status;
  const c = row.cells;
  c.id.textContent = s.id;
  c.type.textContent = s.worker_type;
  if (c.state.dataset.state !== s.state) {
    c.state.dataset.state = s.state;
    c.state.replaceChildren(badge(s.state));
  }
  c.pid.textContent = s.pid ?? '—';
  // The device the pool assigned (`devices` of its pool section), else the one the worker
  // named in its last status report; a worker with neither has nothing to report.
  c.device.textContent = s.device || s.telemetry?.device || 'not reported';
  c.in_flight.textContent = fmtInt(s.in_flight);
  c.served.textContent = fmtInt(s.requests_served);
  c.restarts.textContent = fmtInt(s.restarts);
  c.last_error.textContent = s.last_error || '';
  const up = s.uptime_s === null || s.uptime_s === undefined || s.state !== 'ready'
    ? null : s.uptime_s + (performance.now() - row.at) / 1000;
  c.uptime.textContent = fmtDuration(up);
}

async function restartWorker(id, button) {
  button.disabled = true;
  try {
    await api('POST', '/api/workers/restart/' + encodeURIComponent(id));
    showError($('#view-workers .error'), null);
  } catch (e) {
    showError($('#view-workers .error'), e);
  } finally {
    button.disabled = false;
  }
}

function scheduleRefresh() {
  clearTimeout(workers.refreshTimer);
  workers.refreshTimer = setTimeout(refreshWorkers, 150);
}

function logEvent(kind, text, detail) {
  const log = $('#event-log');
  const time = new Date().toLocaleTimeString('en-GB');
  log.prepend(h('li', {}, h('time', {}, time), badge(kind), h('span', {}, text),
    detail ? h('span', { class: 'muted' }, detail) : null));
  while (log.children.length > 100) log.lastChild.remove();
}

function onLifecycle(e) {
  if (e.worker_id) {
    const row = workers.rows.get(e.worker_id);
    if (row && STATE_OF_KIND[e.kind]) {
      row.status = { ...row.status, state: STATE_OF_KIND[e.kind], pid: e.pid ?? row.status.pid };
      renderWorker(row);
    }
  }
  const who = e.worker_id ? `${e.worker_id} (${e.worker_type})` : e.worker_type;
  logEvent(e.kind, who + (e.pid ? ` pid ${e.pid}` : ''), e.detail);
  scheduleRefresh();
}

let wakeEvents = null;
let wokenUp = false;

/** GET /api/events, read with fetch (so the bearer token can be sent), reconnecting. */
async function followEvents() {
  const live = $('#live');
  let delay = 500;
  for (;;) {
    try {
      const res = await api('GET', '/api/events', undefined, { raw: true });
      showError($('#banner'), null);
      live.className = 'live on';
      live.textContent = 'live';
      delay = 500;
      await readEvents(res, (name, data) => {
        const body = JSON.parse(data);
        if (name === 'open') refreshWorkers();
        else if (name === 'lifecycle') onLifecycle(body);
        else if (name === 'resync') {
          logEvent('resync', `${body.worker_type}: ${body.skipped} events skipped, refetched`);
          refreshWorkers();
        }
      });
    } catch (e) {
      // unauthorized: every view shows it already, where its data is missing.
      if (e.code === 'not_found') showError($('#banner'), e);
    }
    live.className = 'live off';
    live.textContent = 'reconnecting';
    await new Promise((r) => { wakeEvents = r; setTimeout(r, delay); });
    delay = wokenUp ? 500 : Math.min(delay * 2, 10000);
    wokenUp = false;
  }
}

views.workers = { enter: refreshWorkers };

/** Every select[name=worker_type] lists the worker types. */
function fillWorkerTypes() {
  for (const sel of $$('select[name="worker_type"]')) {
    const prev = sel.value;
    const preferred = sel.closest('#sdxl-form') ? 'sdxl' : sel.closest('#batch-form') ? 'echo' : 'echo';
    sel.replaceChildren(...workers.types.map((t) => h('option', { value: t }, t)));
    sel.value = workers.types.includes(prev) ? prev
      : workers.types.includes(preferred) ? preferred : workers.types[0] || '';
  }
}

// ---------------------------------------------------------------------------------------
// Generate: POST /api/inference/stream, progress from its `progress` events, cancel by
// aborting the fetch (the server cancels the request at the worker).

const run = { controller: null, started: 0, timer: null, form: null };

function setMode(mode) {
  for (const b of $$('#view-generate [role="tab"]')) {
    b.setAttribute('aria-selected', String(b.dataset.mode === mode));
  }
  for (const f of $$('#view-generate form')) f.hidden = f.dataset.mode !== mode;
}

let sdxlLoaded = false;
async function loadSdxlOptions() {
  if (sdxlLoaded) return;
  sdxlLoaded = true;
  const sel = $('#sdxl-form select[name="scheduler"]');
  const fill = (names, def) => {
    sel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    sel.value = names.includes(def) ? def : names.includes('Euler a') ? 'Euler a' : names[0];
  };
  // Styles: shown only when the route exists.
  api('GET', '/api/sdxl/enhanced/styles').then((r) => {
    const list = (r && r.data && r.data.styles) || (r && r.styles) || (Array.isArray(r) ? r : []);
    const styles = list.map((s) => (typeof s === 'string' ? { name: s } : s)).filter((s) => s && s.name);
    const pick = $('#sdxl-form select[name="style"]');
    pick.replaceChildren(h('option', { value: '' }, 'none'),
      ...styles.map((s) => h('option', { value: s.name }, s.name)));
    $('#style-row').hidden = styles.length === 0;
  }).catch(() => { $('#style-row').hidden = true; });
  try {
    if (!workers.types.length) await refreshWorkers();
    // No SDXL worker type: the routes would answer 503; the schema's list will do.
    if (!workers.types.includes('sdxl')) throw new ApiError(503, 'unavailable', 'no sdxl worker type');
    const r = await api('GET', '/api/sdxl/enhanced/schedulers');
    fill(r.data.schedulers.map((s) => s.name || s), r.data.default);
  } catch (e) {
    // No SDXL worker (yet): the schema's list, so the form still works.
    try {
      const schema = await api('GET', '/api/sdxl/enhanced/schema');
      fill(schema.properties.scheduler.properties.type.enum, 'Euler a');
    } catch (_) {
      sel.replaceChildren(h('option', { value: '' }, '(unavailable)'));
    }
    sdxlLoaded = e.code !== 'unauthorized' && e.code !== 'network';
  }
}

/** The nested SDXL request of the form (docs/api.md, generation_request.json). */
function sdxlRequest(form) {
  const v = (name) => form.elements[name].value.trim();
  const num = (name) => (v(name) === '' ? undefined : Number(v(name)));
  const prompt = v('prompt');
  const negative = v('negative_prompt');
  const request = {
    model: { base: v('model') },
    scheduler: { steps: num('steps') },
    hyperparameters: { guidance_scale: num('guidance_scale') },
    conditioning: { prompt },
    dimensions: { width: num('width'), height: num('height') },
  };
  if (v('scheduler')) request.scheduler.type = v('scheduler');
  if (negative) request.conditioning.negative_prompt = negative;
  if (num('seed') !== undefined) request.hyperparameters.seed = num('seed');
  // The server applies the preset (templates, scheduler, steps) before the worker sees it.
  if (v('style')) request.style = v('style');
  return request;
}

function runBox() {
  return {
    bar: $('#run .progress'),
    status: $('#run-status'),
    error: $('#run .error'),
    images: $('#run-images'),
    answer: $('#run-answer'),
  };
}

function setRunning(form, running) {
  for (const f of $$('#view-generate form')) {
    $('button[type="submit"]', f).disabled = running;
    $('button.cancel', f).disabled = !(running && f === form);
  }
}

async function submitRun(form, body) {
  const box = runBox();
  showError(box.error, null);
  box.images.replaceChildren();
  box.answer.hidden = true;
  setProgress(box.bar, 0);
  const controller = new AbortController();
  run.controller = controller;
  run.started = performance.now();
  const elapsed = () => ((performance.now() - run.started) / 1000).toFixed(1) + ' s';
  let lastStep = '';
  const tick = () => { box.status.textContent = `running, ${elapsed()}${lastStep}`; };
  tick();
  run.timer = setInterval(tick, 200);
  setRunning(form, true);
  let finished = false;
  try {
    const res = await api('POST', '/api/inference/stream', body, { raw: true, signal: controller.signal });
    await readEvents(res, (name, data) => {
      const d = data ? JSON.parse(data) : null;
      if (name === 'progress' && d) {
        setProgress(box.bar, Number(d.progress) || 0);
        lastStep = ' · ' + [Math.round((Number(d.progress) || 0) * 100) + '%', d.stage, d.message]
          .filter(Boolean).join(' · ');
        tick();
      } else if (name === 'result') {
        finished = true;
        setProgress(box.bar, 1, 'done');
        showResult(box, d);
        box.status.textContent = `done in ${elapsed()}${lastStep}`;
      } else if (name === 'error') {
        finished = true;
        setProgress(box.bar, Number(box.bar.getAttribute('aria-valuenow')) / 100, 'failed');
        const err = d && d.error ? d.error : { code: 'error', message: data };
        showError(box.error, new ApiError(0, err.code, err.message));
        box.status.textContent = `failed after ${elapsed()}`;
      }
    });
    if (!finished) throw new ApiError(0, 'stream_ended', 'the event stream ended without a result');
  } catch (e) {
    if (e.name === 'AbortError') {
      box.status.textContent = `cancelled after ${elapsed()}${lastStep}`;
      setProgress(box.bar, Number(box.bar.getAttribute('aria-valuenow')) / 100, 'failed');
    } else {
      showError(box.error, e);
      box.status.textContent = `failed after ${elapsed()}`;
    }
  } finally {
    clearInterval(run.timer);
    run.controller = null;
    setRunning(form, false);
  }
}

function showResult(box, result) {
  const atts = (result && result.attachments) || [];
  atts.forEach((a, i) => {
    const type = a.content_type || 'image/png';
    if (!type.startsWith('image/')) return;
    const src = `data:${type};base64,${a.data_base64}`;
    box.images.append(h('figure', {},
      h('img', { src, alt: `generated image ${i + 1}`, class: 'generated' }),
      h('figcaption', {}, `${a.name || 'image ' + (i + 1)} · ${fmtBytes(a.size)} · `,
        h('a', { href: src, download: a.name || `ferry-${i + 1}.png` }, 'download'))));
  });
  const shown = { data: result && result.data, metrics: result && result.metrics,
    attachments: atts.map((a) => ({ name: a.name, content_type: a.content_type, size: a.size })) };
  box.answer.textContent = JSON.stringify(shown, null, 2);
  box.answer.hidden = false;
}

async function submitSdxl(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const request = sdxlRequest(form);
  const box = runBox();
  // Checked on the host first (no worker needed): every field error at once.
  try {
    const report = await api('POST', '/api/sdxl/enhanced/validate', request);
    if (report && report.valid === false) {
      const msg = report.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
      showError(box.error, new ApiError(400, 'invalid_request', msg));
      return;
    }
  } catch (e) {
    showError(box.error, e);
    return;
  }
  localStorage.setItem('ferry.model', request.model.base);
  await submitRun(form, {
    worker_type: form.elements.worker_type.value || 'sdxl',
    operation: 'inference.generate',
    data: request,
  });
}

async function submitRaw(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const box = runBox();
  let data;
  try {
    data = parseJson(form.elements.data.value, 'data');
  } catch (e) {
    showError(box.error, e);
    return;
  }
  const body = {
    worker_type: form.elements.worker_type.value,
    operation: form.elements.operation.value.trim(),
    data,
  };
  if (form.elements.priority.value) body.priority = form.elements.priority.value;
  if (form.elements.deadline_ms.value) body.deadline_ms = Number(form.elements.deadline_ms.value);
  await submitRun(form, body);
}

views.generate = {
  enter() {
    if (!workers.types.length) refreshWorkers();
    loadSdxlOptions();
  },
};

// ---------------------------------------------------------------------------------------
// Batches and sessions: lists polled while shown, with progress, item states and results.

const lists = { timer: null, batchCards: new Map(), sessionCards: new Map(), workflows: [] };

async function refreshLists() {
  const box = $('#lists-error');
  try {
    const [b, s] = await Promise.all([
      api('GET', '/api/processing/batches'),
      api('GET', '/api/processing/sessions'),
    ]);
    showError(box, null);
    renderCards($('#batches'), lists.batchCards, b.batches, batchCard, 'No batches.');
    renderCards($('#sessions'), lists.sessionCards, s.sessions, sessionCard, 'No sessions.');
  } catch (e) {
    showError(box, e);
  }
}

/** Keyed cards, newest first; a card's body is rebuilt only when its view changed. */
function renderCards(root, cards, items, make, empty) {
  const seen = new Set();
  const sorted = [...items].sort((a, b) => idNumber(b.id) - idNumber(a.id));
  for (const item of sorted) {
    seen.add(item.id);
    let card = cards.get(item.id);
    const json = JSON.stringify(item);
    if (!card) {
      card = { el: h('div', { class: 'card', 'data-id': item.id }), json: '' };
      cards.set(item.id, card);
    }
    if (card.json !== json) {
      card.json = json;
      make(card, item);
    }
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.el.remove();
      cards.delete(id);
    }
  }
  const els = sorted.map((i) => cards.get(i.id).el);
  if (els.length === 0) root.replaceChildren(h('p', { class: 'muted' }, empty));
  else if (els.some((el, i) => root.children[i] !== el) || root.children.length !== els.length) {
    root.replaceChildren(...els);
  }
}
const idNumber = (id) => Number(String(id).replace(/^\D+-/, '')) || 0;

function cardHead(card, title, status, actions) {
  if (!card.head) {
    card.badge = h('span');
    card.buttons = h('span', { class: 'buttons spacer' });
    card.head = h('h3', {}, h('span', { class: 'title' }), card.badge, card.buttons);
    card.body = h('div');
    card.el.append(card.head, card.body);
  }
  $('.title', card.head).textContent = title;
  card.badge.replaceChildren(badge(status));
  const names = actions.map((a) => a[0]).join();
  if (card.buttons.dataset.names !== names) {
    card.buttons.dataset.names = names;
    card.buttons.replaceChildren(...actions.map(([label, fn]) =>
      h('button', { type: 'button', onclick: () => fn().catch((e) => showError($('#lists-error'), e)).then(refreshLists) }, label)));
  }
}

/** The PNGs among base64 attachments (`result_attachments`), as data URLs. */
function pngs(attachments) {
  return (attachments || []).filter((b64) => b64.startsWith('iVBOR')).map((b64) => 'data:image/png;base64,' + b64);
}

function thumbs(srcs) {
  return srcs.length ? h('span', { class: 'thumbs' }, srcs.map((src, i) =>
    h('img', { class: 'thumb', src, alt: `result image ${i + 1}` }))) : null;
}

function errText(err) {
  return err ? h('span', { class: 'err' }, h('code', {}, err.code), ' ', err.message) : null;
}

function batchCard(card, b) {
  const id = encodeURIComponent(b.id);
  const active = b.status === 'running' || b.status === 'pending';
  cardHead(card, b.id, b.status, [
    ...(active ? [['Cancel', () => api('POST', `/api/processing/batches/${id}/cancel`, {})]] : []),
    ['Delete', () => api('DELETE', `/api/processing/batches/${id}`)],
  ]);
  const counts = Object.entries(b.counts || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(' · ');
  put(card.body,
    progressBar(b.progress || 0, 'small'),
    h('div', { class: 'counts' }, `${Math.round((b.progress || 0) * 100)}% · ${counts || 'no items'}`),
    h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'state'), h('th', {}, 'result'))),
      h('tbody', {}, b.items.map((it) => h('tr', { 'data-index': it.index },
        h('td', { class: 'num' }, it.index),
        h('td', {}, badge(it.status)),
        h('td', {}, thumbs(imagesIn(it.result).concat(pngs(it.result_attachments))), it.result !== null && it.result !== undefined
          ? h('code', {}, brief(it.result)) : null, errText(it.error)))))),
  );
}

function sessionCard(card, s) {
  const id = encodeURIComponent(s.id);
  const control = (action) => () => api('POST', `/api/processing/sessions/${id}/control`, { action });
  const actions = [];
  if (s.status === 'running' || s.status === 'pending') actions.push(['Pause', control('pause')], ['Cancel', control('cancel')]);
  if (s.status === 'paused') actions.push(['Resume', control('resume')], ['Cancel', control('cancel')]);
  if (['completed', 'failed', 'cancelled'].includes(s.status)) actions.push(['Restart', control('restart')]);
  actions.push(['Delete', () => api('DELETE', `/api/processing/sessions/${id}`)]);
  cardHead(card, `${s.id} · ${s.workflow_id}`, s.status, actions);
  const images = imagesIn(s.result).concat(pngs(s.result_attachments));
  put(card.body,
    progressBar(s.progress || 0, 'small'),
    h('div', { class: 'counts' }, `${Math.round((s.progress || 0) * 100)}%`,
      s.current_step ? ` · step ${s.current_step}` : '', s.pause_requested ? ' · pause requested' : '',
      ` · created ${s.created_at}`),
    h('table', { class: 'grid' },
      h('thead', {}, h('tr', {}, h('th', {}, 'step'), h('th', {}, 'state'), h('th', { class: 'num' }, 'ms'), h('th', {}, 'error'))),
      h('tbody', {}, s.steps.map((st) => h('tr', {},
        h('td', {}, st.name), h('td', {}, badge(st.status)),
        h('td', { class: 'num' }, st.duration_ms === null || st.duration_ms === undefined ? '' : Math.round(st.duration_ms)),
        h('td', {}, errText(st.error)))))),
    s.result !== null && s.result !== undefined ? h('p', {}, 'result: ', h('code', {}, brief(s.result, 300))) : null,
    thumbs(images),
    errText(s.error),
  );
}

async function loadWorkflows() {
  try {
    const { workflows } = await api('GET', '/api/processing/workflows');
    lists.workflows = workflows.map((w) => w.id);
    for (const sel of $$('select[name="workflow"]')) {
      const prev = sel.value;
      sel.replaceChildren(...lists.workflows.map((id) => h('option', { value: id }, id)));
      if (lists.workflows.includes(prev)) sel.value = prev;
    }
  } catch (e) {
    showError($('#lists-error'), e);
  }
}

async function submitBatch(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const box = $('.error', form);
  try {
    const items = parseJson(form.elements.items.value, 'items');
    if (!Array.isArray(items)) throw new ApiError(0, 'invalid_json', 'items: expected a JSON array');
    const spec = { items, parallelism: Number(form.elements.parallelism.value) || 1 };
    if (form.elements.target.value === 'workflow') spec.workflow = form.elements.workflow.value;
    else Object.assign(spec, { worker_type: form.elements.worker_type.value, operation: form.elements.operation.value.trim() });
    const batch = await api('POST', '/api/processing/batches', spec);
    await api('POST', `/api/processing/batches/${encodeURIComponent(batch.id)}/execute`);
    showError(box, null);
  } catch (e) {
    showError(box, e);
  }
  refreshLists();
}

async function submitSession(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const box = $('.error', form);
  try {
    const input = parseJson(form.elements.input.value, 'input');
    await api('POST', `/api/processing/workflows/${encodeURIComponent(form.elements.workflow.value)}/execute`, input);
    showError(box, null);
  } catch (e) {
    showError(box, e);
  }
  refreshLists();
}

views.batches = {
  enter() {
    if (!workers.types.length) refreshWorkers();
    loadWorkflows();
    refreshLists();
  },
  poll: refreshLists,
};

// ---------------------------------------------------------------------------------------
// Benchmarks: GET /api/bench/latest (the JSON of `ferry bench --json`) drawn as SVG charts of
// p50 by transport and payload, each bar with its floor (the same mechanism with no engine).

const TRANSPORT_COLOURS = { stdio: '#1d4f91', socket: '#2f9e8f', tcp: '#8e5cc9', shm: '#e07b24', http: '#c0392b' };
const FLOOR_COLOUR = '#b9c0ca';
const bench = { data: null };

async function loadBench() {
  const box = $('#view-bench .error');
  $('#bench-charts').replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  try {
    bench.data = await api('GET', '/api/bench/latest');
    showError(box, null);
    const pins = [...new Set(bench.data.results.map((r) => r.pin || 'none'))];
    const sel = $('#bench-pin');
    sel.replaceChildren(...pins.map((p) => h('option', { value: p }, p)));
    sel.value = pins.includes('none') ? 'none' : pins[0];
    $('#bench-pin-row').hidden = pins.length < 2;
    drawBench();
  } catch (e) {
    bench.data = null;
    $('#bench-charts').replaceChildren();
    $('#bench-meta').replaceChildren();
    $('#bench-table').replaceChildren();
    showError(box, e);
  }
}

function drawBench() {
  const d = bench.data;
  const pin = $('#bench-pin').value || 'none';
  const m = d.machine || {};
  put($('#bench-meta'),
    h('p', {}, `ferry ${d.ferry_version || '?'} · run ${d.started_at || '?'} · ${m.cpu_model || '?'}, `
      + `${m.cores_allowed ?? m.cores ?? '?'} cores · ${m.os || ''} ${m.kernel || ''} · pinning ${pin}`),
    d.method && d.method.notes ? h('details', {}, h('summary', {}, 'Method'),
      h('ul', {}, d.method.notes.map((n) => h('li', {}, n)))) : null,
  );
  const rows = d.results.filter((r) => (r.pin || 'none') === pin);
  const payloads = [...new Set(rows.map((r) => r.payload_bytes))].sort((a, b) => a - b);
  const transports = [...new Set(rows.map((r) => r.transport))];
  const legend = h('div', { class: 'legend' },
    transports.map((t) => h('span', { class: 't-' + t }, t)),
    h('span', { class: 't-floor' }, 'floor: the same mechanism with no engine'));
  $('#bench-charts').replaceChildren(legend,
    ...payloads.map((p) => chart(p, rows.filter((r) => r.payload_bytes === p))));
  // `+floor`: what the engine adds to the floor, steadier than the ratio when the floor itself
  // moves; `peer`: another project's ping-pong in the same run (iceoryx2 on shm); `vs http`:
  // a `serve` row over the Python http.server of the same run.
  const cols = ['transport', 'worker', 'codec', 'payload', 'p50', 'p99', 'floor', 'floor p50', 'ratio', '+floor',
    'peer', 'vs http', 'claim'];
  $('#bench-table').replaceChildren(h('table', { class: 'grid' },
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {},
      h('td', {}, r.transport), h('td', {}, r.worker), h('td', {}, r.codec), h('td', { class: 'num' }, fmtBytes(r.payload_bytes)),
      h('td', { class: 'num' }, fmtUs(r.p50_us)), h('td', { class: 'num' }, fmtUs(r.p99_us)), h('td', {}, r.floor || ''),
      h('td', { class: 'num' }, r.floor_p50_us ? fmtUs(r.floor_p50_us) : ''),
      h('td', { class: 'num' }, r.ratio_to_floor ? r.ratio_to_floor.toFixed(2) + '×' : ''),
      h('td', { class: 'num', 'data-col': 'over-floor' }, overFloor(r.over_floor_us)),
      h('td', { 'data-col': 'peer' }, r.peer && r.peer_p50_us
        ? `${r.peer} ${fmtUs(r.peer_p50_us)}` + (r.ratio_to_peer ? ` (${r.ratio_to_peer.toFixed(2)}×)` : '') : ''),
      h('td', { class: 'num', 'data-col': 'vs-http' }, r.ratio_to_http_baseline ? r.ratio_to_http_baseline.toFixed(2) + '×' : ''),
      h('td', {}, r.claim_us ? `${r.claim_met ? 'met' : 'missed'} (< ${fmtUs(r.claim_us)})` : ''))))));
}

/** What the engine adds to its floor, signed (`−` where it beats the floor); empty without one. */
function overFloor(us) {
  if (us === null || us === undefined) return '';
  return (us < 0 ? '−' : '+') + fmtUs(Math.abs(us));
}

/** One chart: a bar per transport and worker on a log scale, the floor's bar under it. */
function chart(payload, rows) {
  const W = 1000, left = 150, right = 150, barH = 14, floorH = 7, gap = 10;
  const rowH = barH + floorH + 2 + gap;
  const top = 8, axisH = 24;
  const H = top + rows.length * rowH + axisH;
  const values = rows.flatMap((r) => [r.p50_us, r.floor_p50_us].filter((v) => v > 0));
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values))));
  const x = (v) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - left - right);
  const parts = [];
  for (let t = lo; t <= hi * 1.0001; t *= 10) {
    parts.push(svg('line', { x1: x(t), x2: x(t), y1: top - 4, y2: H - axisH + 2, stroke: '#e3e6eb' }),
      svg('text', { x: x(t), y: H - 8, 'text-anchor': 'middle', class: 'floor-label' }, fmtTick(t)));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const colour = TRANSPORT_COLOURS[r.transport] || '#555';
    parts.push(svg('text', { x: left - 8, y: y + barH - 3, 'text-anchor': 'end' }, `${r.transport} · ${r.worker}`),
      svg('rect', { x: left, y, width: Math.max(1, x(r.p50_us) - left), height: barH, fill: colour, rx: 2 },
        svg('title', {}, `${r.transport} ${r.worker} ${r.codec}: p50 ${fmtUs(r.p50_us)}, p99 ${fmtUs(r.p99_us)}`)),
      svg('text', { x: x(r.p50_us) + 6, y: y + barH - 3 }, fmtUs(r.p50_us)
        + (r.ratio_to_floor ? ` (${r.ratio_to_floor.toFixed(1)}× floor)` : '')));
    if (r.floor_p50_us) {
      const fy = y + barH + 2;
      parts.push(svg('rect', { x: left, y: fy, width: Math.max(1, x(r.floor_p50_us) - left), height: floorH, fill: FLOOR_COLOUR, rx: 1 },
        svg('title', {}, `floor ${r.floor}: p50 ${fmtUs(r.floor_p50_us)}`)),
      svg('text', { x: x(r.floor_p50_us) + 6, y: fy + floorH, class: 'floor-label', 'font-size': 10 }, `${r.floor} ${fmtUs(r.floor_p50_us)}`));
    }
  });
  return h('div', { class: 'chart', 'data-payload': payload },
    h('h3', {}, `p50 round trip, ${fmtBytes(payload)} payload`),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `p50 by transport, ${fmtBytes(payload)}` }, parts));
}

views.bench = { enter() { if (!bench.data) loadBench(); } };

// ---------------------------------------------------------------------------------------
// Start.

function init() {
  const tokenInput = $('#token');
  tokenInput.value = token();
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    showError($('#banner'), null);
    sdxlLoaded = false;
    wokenUp = true;
    wakeEvents?.();
    show(current);
    refreshWorkers();
  });
  $('#token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    tokenInput.value = '';
  });
  $('#workers-refresh').addEventListener('click', refreshWorkers);
  $('#bench-refresh').addEventListener('click', loadBench);
  $('#bench-pin').addEventListener('change', drawBench);
  for (const b of $$('#view-generate [role="tab"]')) b.addEventListener('click', () => setMode(b.dataset.mode));
  $('#sdxl-form').addEventListener('submit', submitSdxl);
  $('#raw-form').addEventListener('submit', submitRaw);
  for (const c of $$('#view-generate button.cancel')) c.addEventListener('click', () => run.controller?.abort());
  const model = localStorage.getItem('ferry.model');
  if (model) $('#sdxl-form').elements.model.value = model;
  $('#batch-form').elements.target.addEventListener('change', (ev) => {
    for (const l of $$('#batch-form [data-target]')) l.hidden = l.dataset.target !== ev.target.value;
  });
  $('#batch-form').addEventListener('submit', submitBatch);
  $('#session-form').addEventListener('submit', submitSession);
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  window.addEventListener('unhandledrejection', (ev) => {
    showError($('#banner'), ev.reason instanceof Error ? ev.reason : new Error(String(ev.reason)));
  });
  show(location.hash.slice(1) || 'workers');
  followEvents();
  // Counters (in flight, served, uptime) change without lifecycle events: poll the shown view.
  setInterval(() => {
    if (document.hidden) return;
    if (current === 'workers') refreshWorkers();
    else if (views[current].poll) views[current].poll();
  }, 1000);
}

document.addEventListener('DOMContentLoaded', init);
