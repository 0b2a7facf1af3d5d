// What the page downloads, end to end in headless Chromium with a fake camera, served
// compressed as a static host serves it (harness.mjs): until the camera's first prediction at
// most 1.5 MB in all, and over the whole visit (camera, training worker started by a dropped
// file, another shipped model chosen from the menu) each engine build, model file and face
// detector file fetched at most once: the workers get the engine compiled, the model as bytes.
// Also without cross-origin isolation (the single-threaded build). No console errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { withBrowser, collectErrors, dropFile, barFacesCsvLines } from './harness.mjs';
import { readScene, enlarge, y4m } from './face-scene.mjs';

const BUDGET_BYTES = 1_500_000; // issue 28: sent before the camera's first prediction
const FETCHED_ONCE = /\.(wasm|safetensors)$|\/face-detector\//;

/** Runs `body({ server, browser, responses })` with a fake camera, every response the server sends recorded in `responses`. */
async function withRecordedServer(serveOptions, body) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-payload-'));
  const video = path.join(dir, 'faces.y4m');
  await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
  const responses = [];
  try {
    return await withBrowser(
      ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`],
      ({ server, browser }) => body({ server, browser, responses }),
      { ...serveOptions, onResponse: (response) => responses.push(response) },
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Opens the page, starts the camera as soon as it can, and resolves once its first frame is classified: { page, errors, firstFrameAt }. */
async function openToFirstPrediction(browser, url) {
  const context = await browser.newContext();
  let firstFrameAt = null;
  await context.exposeBinding('testFirstFrame', () => { firstFrameAt ??= performance.now(); });
  await context.addInitScript(() => {
    new MutationObserver(() => {
      const start = document.querySelector('#camera-start');
      if (start && !start.disabled && !window.testStarted) {
        window.testStarted = true;
        start.click();
      }
      if (Number(document.querySelector('#camera')?.dataset.frames ?? 0) >= 1 && !window.testFramed) {
        window.testFramed = true;
        window.testFirstFrame();
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['disabled', 'data-frames'] });
  });
  const page = await context.newPage();
  const errors = await collectErrors(page);
  await page.goto(url);
  await page.waitForSelector('#camera[data-frames]', { timeout: 30_000 });
  for (let tries = 0; firstFrameAt === null; tries++) {
    if (tries > 100) throw new Error('the first frame was classified, but the page did not say so');
    await page.waitForTimeout(10);
  }
  return { page, errors, firstFrameAt };
}

/** `{ path: times fetched }` of the files that must be fetched once, from `responses`. */
function fetchCounts(responses) {
  const counts = {};
  for (const { path: file } of responses.filter((r) => FETCHED_ONCE.test(r.path))) counts[file] = (counts[file] ?? 0) + 1;
  return counts;
}

function assertFetchedOnce(responses) {
  const counts = fetchCounts(responses);
  const repeated = Object.entries(counts).filter(([, n]) => n > 1);
  assert.deepEqual(repeated, [], `files fetched more than once: ${JSON.stringify(counts)}`);
}

test('payload: at most 1.5 MB until the first prediction; each build, model and detector file fetched once over a visit', () => withRecordedServer({}, async ({ server, browser, responses }) => {
  const { page, errors, firstFrameAt } = await openToFirstPrediction(browser, server.url);
  const first = responses.filter((r) => r.at <= firstFrameAt);
  const sent = first.reduce((sum, r) => sum + r.sentBytes, 0);
  const listing = first.map((r) => `${r.path} ${r.status} ${r.encoding ?? 'identity'} ${r.sentBytes}`).join('\n');
  console.log(`sent until the first prediction: ${sent} bytes in ${first.length} responses`);
  assert.ok(first.some((r) => r.encoding === 'br'), 'the server compressed what it sent');
  assert.ok(sent <= BUDGET_BYTES, `${sent} bytes sent before the first prediction, over ${BUDGET_BYTES}:\n${listing}`);
  const wasm = first.filter((r) => r.path.endsWith('.wasm'));
  assert.deepEqual(wasm.map((r) => r.path), ['/pkg-threads/fer_cnn_bg.wasm'], 'one build, the multi-threaded one');
  assert.equal(first.filter((r) => r.path.endsWith('.safetensors')).length, 1, 'one model');
  assert.ok(!first.some((r) => r.path.endsWith('/train-worker.js')), 'the training worker waits for the training section');
  assertFetchedOnce(responses);

  // The rest of the visit: training (its worker shares the page's compiled engine) and the
  // other shipped models from the menu, each chosen twice.
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  await dropFile(page, '#drop-zone', 'bars.csv', Buffer.from(`${barFacesCsvLines({ Training: 14, PublicTest: 7 }).join('\n')}\n`));
  await page.waitForSelector('#load-summary:not([hidden])', { timeout: 30_000 });
  const shipped = await page.$$eval('#model-select option', (options) => options.map((o) => o.value));
  const firstModel = await page.inputValue('#model-select');
  for (const id of [...shipped, ...shipped].filter((value) => value !== firstModel)) {
    await page.selectOption('#model-select', id);
    await page.waitForFunction((value) => document.querySelector('#model-select').value === value, id);
  }
  await page.selectOption('#model-select', firstModel);
  const models = Object.keys(fetchCounts(responses)).filter((file) => file.endsWith('.safetensors'));
  assert.equal(models.length, shipped.length, `every shipped model was fetched: ${models}`);
  assertFetchedOnce(responses);
  assert.deepEqual(errors, []);
}));

test('payload: without cross-origin isolation the single-threaded build is fetched once, and the camera works', () => withRecordedServer({ isolated: false }, async ({ server, browser, responses }) => {
  const { page, errors } = await openToFirstPrediction(browser, server.url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  await dropFile(page, '#drop-zone', 'bars.csv', Buffer.from(`${barFacesCsvLines({ Training: 14, PublicTest: 7 }).join('\n')}\n`));
  await page.waitForSelector('#load-summary:not([hidden])', { timeout: 30_000 });
  assert.deepEqual(Object.keys(fetchCounts(responses)).filter((file) => file.endsWith('.wasm')), ['/pkg/fer_cnn_bg.wasm']);
  assertFetchedOnce(responses);
  assert.deepEqual(errors, []);
}));
