// The ferry serve web console in a real headless Chromium (Debian's `chromium`), driven by
// playwright-core. Run by scripts/browser-test, which starts `ferry serve` and sets:
//   FERRY_URL          http://127.0.0.1:PORT of the server
//   FERRY_TOKEN        its bearer token (the page gets it as a user would paste it)
//   FERRY_SDXL         0 to skip the SDXL generation (no `sdxl` worker type configured)
//   FERRY_SCREENSHOTS  a folder for a PNG of each view (docs/console), or empty for none
//   CHROMIUM           the browser (default /usr/bin/chromium)
// Every wait is on the page's state (an element, a text, an attribute), never a fixed sleep.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const URL = process.env.FERRY_URL;
const TOKEN = process.env.FERRY_TOKEN || '';
const SDXL = process.env.FERRY_SDXL !== '0';
const SHOTS = process.env.FERRY_SCREENSHOTS || '';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// Loads allowed to fail: none (every route the page calls exists).
const EXPECTED_FAILURES = [];

assert.ok(URL, 'FERRY_URL is not set: run scripts/browser-test');

let browser;
let page;
const consoleErrors = [];

function watch(p, into) {
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location().url || '';
    if (!EXPECTED_FAILURES.some((re) => re.test(where))) into.push(`${m.text()} (${where})`);
  });
  p.on('pageerror', (e) => into.push('uncaught: ' + e.message));
}

async function newPage(withToken) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  if (withToken && TOKEN) {
    await context.addInitScript((t) => sessionStorage.setItem('ferry.token', t), TOKEN);
  }
  return context.newPage();
}

async function shot(name) {
  if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png` });
}

/** The cell `col` of worker type `type`'s (first) row, as text, once the row exists. */
async function cell(type, col) {
  const row = page.locator('#workers-table tr[data-worker]', {
    has: page.locator(`td[data-col="type"]:text-is("${type}")`),
  }).first();
  await row.waitFor();
  return row.locator(`td[data-col="${col}"]`);
}

async function waitText(locator, expected, timeout = 60000) {
  await locator.page().waitForFunction(
    ([el, want]) => (want instanceof RegExp ? want.test(el.textContent) : el.textContent.trim() === want),
    [await locator.elementHandle(), expected], { timeout, polling: 100 });
}

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
  page = await newPage(true);
  watch(page, consoleErrors);
});

after(async () => {
  await browser?.close();
});

test('the page loads without console errors and lists the running echo worker', async () => {
  await page.goto(URL + '/#workers');
  await page.locator('#live.on').waitFor();
  await waitText(await cell('echo', 'state'), 'ready');
  assert.match(await (await cell('echo', 'pid')).textContent(), /^\d+$/);
  // No device is configured for the echo worker.
  await waitText(await cell('echo', 'device'), 'not reported');
  assert.deepEqual(consoleErrors, []);
});

test('a restart from the table is followed through lifecycle events', async () => {
  await page.goto(URL + '/#workers');
  const pidCell = await cell('echo', 'pid');
  await waitText(await cell('echo', 'state'), 'ready');
  const pid = (await pidCell.textContent()).trim();
  const id = await page.locator('#workers-table tr[data-worker]', {
    has: page.locator('td[data-col="type"]:text-is("echo")'),
  }).first().getAttribute('data-worker');
  await page.locator(`tr[data-worker="${id}"] button`, { hasText: 'Restart' }).click();
  await page.locator('#event-log li', { hasText: `${id} (echo)` }).filter({ hasText: 'started' }).first().waitFor();
  await page.locator('#event-log li', { hasText: `${id} (echo)` }).filter({ hasText: 'ready' }).first().waitFor();
  await waitText(await cell('echo', 'state'), 'ready');
  await page.waitForFunction(([el, old]) => /^\d+$/.test(el.textContent) && el.textContent !== old,
    [await pidCell.elementHandle(), pid]);
  await waitText(await cell('echo', 'restarts'), /^[1-9]/);
});

test('an echo request shows the answer', async () => {
  await page.goto(URL + '/#generate');
  await page.locator('[role="tab"][data-mode="raw"]').click();
  const form = page.locator('#raw-form');
  await form.locator('select[name="worker_type"] option[value="echo"]').waitFor({ state: 'attached' });
  await form.locator('select[name="worker_type"]').selectOption('echo');
  await form.locator('input[name="operation"]').fill('echo');
  await form.locator('textarea[name="data"]').fill('{"prompt": "a fox in the console", "n": 7}');
  await form.locator('button[type="submit"]').click();
  await page.locator('#run-answer', { hasText: 'a fox in the console' }).waitFor();
  await waitText(page.locator('#run-status'), /^done in/);
  const answer = JSON.parse(await page.locator('#run-answer').textContent());
  assert.deepEqual(answer.data, { prompt: 'a fox in the console', n: 7 });
});

test('an API error is shown with its code and message', async () => {
  await page.goto(URL + '/#generate');
  await page.locator('[role="tab"][data-mode="raw"]').click();
  const form = page.locator('#raw-form');
  await form.locator('input[name="operation"]').fill('no.such.operation');
  await form.locator('textarea[name="data"]').fill('{}');
  await form.locator('button[type="submit"]').click();
  const box = page.locator('#run .error');
  await box.locator('.code', { hasText: 'unknown_operation' }).waitFor();
  assert.match(await box.locator('.message').textContent(), /no\.such\.operation/);
});

test('cancelling a long sleep cancels it at the worker: in flight back to 0', async () => {
  await page.goto(URL + '/#generate');
  await page.locator('[role="tab"][data-mode="raw"]').click();
  const form = page.locator('#raw-form');
  await form.locator('input[name="operation"]').fill('sleep');
  await form.locator('textarea[name="data"]').fill('{"ms": 60000, "steps": 600}');
  await form.locator('button[type="submit"]').click();
  await waitText(page.locator('#run-status'), /step \d+\/600/);
  // Views are only hidden: the request goes on while the table is shown.
  await page.locator('header nav a[data-view="workers"]').click();
  await waitText(await cell('echo', 'in_flight'), '1');
  await page.locator('header nav a[data-view="generate"]').click();
  await form.locator('button.cancel').click();
  await waitText(page.locator('#run-status'), /^cancelled after/);
  await page.locator('header nav a[data-view="workers"]').click();
  await waitText(await cell('echo', 'in_flight'), '0', 30000);
  await shot('workers');
});

test('the tiny SDXL pipeline: a progress bar to 100% and the image', { skip: !SDXL && 'FERRY_SDXL=0' }, async () => {
  await page.goto(URL + '/#generate');
  await page.locator('[role="tab"][data-mode="sdxl"]').click();
  const form = page.locator('#sdxl-form');
  await form.locator('select[name="worker_type"] option[value="sdxl"]').waitFor({ state: 'attached' });
  // Schedulers come from the worker (scheduler.list).
  await form.locator('select[name="scheduler"] option[value="Euler a"]').waitFor({ state: 'attached', timeout: 300000 });
  await form.locator('select[name="scheduler"]').selectOption('Euler a');
  // Style presets come from GET /api/sdxl/enhanced/styles; the server applies the one picked
  // (the request's own steps win over the preset's).
  await form.locator('select[name="style"] option[value="photographic"]').waitFor({ state: 'attached' });
  assert.equal(await page.locator('#style-row').isHidden(), false, 'the styles route lists presets');
  await form.locator('select[name="style"]').selectOption('photographic');
  await form.locator('textarea[name="prompt"]').fill('a red fox in the snow, seen from the console');
  await form.locator('input[name="width"]').fill('128');
  await form.locator('input[name="height"]').fill('96');
  await form.locator('input[name="steps"]').fill('4');
  await form.locator('input[name="seed"]').fill('7');
  await form.locator('button[type="submit"]').click();
  const img = page.locator('#run-images img.generated');
  await img.waitFor({ timeout: 300000 });
  assert.equal(await page.locator('#run .progress').getAttribute('aria-valuenow'), '100');
  // The worker's own last progress event, not only the bar completed by the result.
  // (stages: initialization, inference step by step, then postprocessing as the PNG is made).
  await waitText(page.locator('#run-status'), /100% · postprocessing · encoding 1 image\(s\)/);
  const size = await img.evaluate((el) => el.decode().then(() => [el.naturalWidth, el.naturalHeight]));
  assert.deepEqual(size, [128, 96]);
  await shot('generate');
});

test('a workflow session completes and a batch advances', async () => {
  await page.goto(URL + '/#batches');
  const sessionForm = page.locator('#session-form');
  await sessionForm.locator('select[name="workflow"] option[value="echo_twice"]').waitFor({ state: 'attached' });
  await sessionForm.locator('select[name="workflow"]').selectOption('echo_twice');
  await sessionForm.locator('textarea[name="input"]').fill('{"prompt": "two steps"}');
  await sessionForm.locator('button[type="submit"]').click();
  const session = page.locator('#sessions .card').first();
  await session.locator('h3 .badge.completed').waitFor();
  assert.match(await session.textContent(), /two steps/);
  assert.equal(await session.locator('tbody .badge.completed').count(), 2);
  // A part the card leaves out (no images, no error) is absent, not the text "null".
  const stray = await session.evaluate((card) => [card, ...card.querySelectorAll('*')].some((e) =>
    [...e.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() === 'null')));
  assert.equal(stray, false, 'a text "null" in the session card');

  const form = page.locator('#batch-form');
  await form.locator('select[name="worker_type"] option[value="echo"]').waitFor({ state: 'attached' });
  await form.locator('select[name="worker_type"]').selectOption('echo');
  await form.locator('input[name="operation"]').fill('sleep');
  await form.locator('textarea[name="items"]').fill(
    '[{"ms": 1500, "steps": 3}, {"ms": 5000, "steps": 5}, {"ms": 5000, "steps": 5}, {"ms": 1500, "steps": 3}]');
  await form.locator('input[name="parallelism"]').fill('2');
  await form.locator('button[type="submit"]').click();
  const card = page.locator('#batches .card').first();
  // Part done, part running: the batch advancing.
  await card.locator('h3 .badge.running').waitFor();
  await card.locator('tbody .badge.completed').first().waitFor();
  if ((await card.locator('h3 .badge.running').count()) === 1) await shot('batches');
  await card.locator('h3 .badge.completed').waitFor({ timeout: 60000 });
  assert.equal(await card.locator('tbody .badge.completed').count(), 4);
  assert.equal(await card.locator('.progress').getAttribute('aria-valuenow'), '100');
});

test('an SDXL workflow session shows its images as thumbnails', { skip: !SDXL && 'FERRY_SDXL=0' }, async () => {
  await page.goto(URL + '/#batches');
  const form = page.locator('#session-form');
  await form.locator('select[name="workflow"] option[value="sdxl_style_batch"]').waitFor({ state: 'attached' });
  await form.locator('select[name="workflow"]').selectOption('sdxl_style_batch');
  await form.locator('textarea[name="input"]').fill(JSON.stringify({
    model: 'tiny-sdxl', prompts: ['a red fox', 'a grey owl'], style: 'anime', steps: 2, width: 64, height: 64,
  }));
  await form.locator('button[type="submit"]').click();
  const session = page.locator('#sessions .card', { hasText: 'sdxl_style_batch' }).first();
  await session.locator('h3 .badge.completed').waitFor({ timeout: 300000 });
  const thumbs = session.locator('img.thumb');
  await thumbs.nth(1).waitFor();
  assert.equal(await thumbs.count(), 2);
  const size = await thumbs.first().evaluate((el) => el.decode().then(() => [el.naturalWidth, el.naturalHeight]));
  assert.deepEqual(size, [64, 64]);

  // A batch of SDXL generations: each item's image as a thumbnail in its row.
  const batch = page.locator('#batch-form');
  await batch.locator('select[name="worker_type"] option[value="sdxl"]').waitFor({ state: 'attached' });
  await batch.locator('select[name="worker_type"]').selectOption('sdxl');
  await batch.locator('input[name="operation"]').fill('inference.generate');
  const item = (prompt) => ({ model: 'tiny-sdxl', prompt, steps: 2, width: 64, height: 64 });
  await batch.locator('textarea[name="items"]').fill(JSON.stringify([item('a boat'), item('a tree')]));
  await batch.locator('input[name="parallelism"]').fill('1');
  await batch.locator('button[type="submit"]').click();
  const card = page.locator('#batches .card', { has: page.locator('tbody img.thumb') }).first();
  await card.locator('h3 .badge.completed').waitFor({ timeout: 300000 });
  assert.equal(await card.locator('tbody tr img.thumb').count(), 2);
  await card.scrollIntoViewIfNeeded();
  await shot('sdxl-results');
});

test('the benchmark charts: p50 by transport and payload, with floors', async () => {
  await page.goto(URL + '/#bench');
  await page.locator('#bench-charts .chart svg').first().waitFor();
  const charts = await page.locator('#bench-charts .chart').count();
  assert.ok(charts >= 2, `${charts} charts`);
  const bars = await page.locator('#bench-charts .chart svg rect').count();
  assert.ok(bars >= 4, `${bars} bars`);
  assert.match(await page.locator('#bench-charts').textContent(), /floor/);
  await shot('bench');
  // Every figure: what the engine adds to its floor, the peer and the HTTP baseline columns.
  await page.locator('#bench-table-box summary').click();
  const heads = await page.locator('#bench-table thead th').allTextContents();
  for (const col of ['ratio', '+floor', 'peer', 'vs http']) assert.ok(heads.includes(col), heads.join(', '));
  const over = await page.locator('#bench-table td[data-col="over-floor"]').allTextContents();
  assert.ok(over.some((t) => /^[+−]\d/.test(t)), `no signed difference to a floor in ${over.join(', ')}`);
});

test('no console errors in all of the above', () => {
  assert.deepEqual(consoleErrors, []);
});

test('without the token, the API error is shown; pasting the token loads the workers', { skip: !TOKEN && 'no token configured' }, async () => {
  const p = await newPage(false);
  const errors = [];
  watch(p, errors);
  await p.goto(URL + '/#workers');
  const box = p.locator('#view-workers .error');
  await box.locator('.code', { hasText: 'unauthorized' }).waitFor();
  assert.match(await box.textContent(), /missing or wrong bearer token/);
  const previous = page;
  page = p;
  await shot('token');
  page = previous;
  await p.locator('#token').fill(TOKEN);
  await p.locator('#token-form button[type="submit"]').click();
  await p.locator('#workers-table tr[data-worker]').first().waitFor();
  await p.locator('#live.on').waitFor();
  assert.equal(await box.isHidden(), true);
  await p.context().close();
});
