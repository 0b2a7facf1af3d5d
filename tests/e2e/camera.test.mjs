// The camera section, end to end in headless Chromium: a fake camera plays a video built here
// from tests/fixtures/face_scene.pgm (three FER2013 faces on a gradient); the page must box the
// three faces, show seven probabilities summing to 1 and the 48x48 crop for each, report its
// speed, and release the camera on Stop. Also: permission denied, and a photo (with faces, and
// without) through the same pipeline, with and without mirror test-time augmentation, and the
// same photo classified alike by the camera worker's multi-threaded and single-threaded
// engines. Faults: each way getUserMedia can fail has its own message; a hidden tab sends no
// frame to the worker and goes on when shown; a crashed worker is replaced and the video (or
// the photo) goes on, until it keeps crashing. No console errors throughout, beyond the faults
// a test injects.
//
// UPDATE_SCREENSHOTS=1 node --test tests/e2e/camera.test.mjs also rewrites
// tests/e2e/screenshots/camera.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CAMERA_WORKER, withBrowser, openPage } from './harness.mjs';
import { SCENE_FACES, readScene, enlarge, y4m, png } from './face-scene.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Per visible face card: its probabilities and whether its crop canvas shows a picture (not one flat colour). */
async function faceCards(page) {
  return page.$$eval('#camera-faces .camera-face:not([hidden])', (cards) => cards.map((card) => {
    const canvas = card.querySelector('canvas');
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const greys = new Set();
    for (let i = 0; i < pixels.length; i += 4) greys.add(pixels[i]);
    return { probs: card.dataset.probs.split(',').map(Number), label: card.querySelector('figcaption').textContent, greys: greys.size, side: canvas.width };
  }));
}

function assertFaces(cards, expected) {
  assert.equal(cards.length, expected);
  for (const card of cards) {
    assert.equal(card.probs.length, 7);
    assert.ok(card.probs.every((p) => p >= 0 && p <= 1), `probabilities in 0..1: ${card.probs}`);
    const sum = card.probs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `probabilities sum to ${sum}`);
    assert.match(card.label, /^Face \d: (Angry|Disgust|Fear|Happy|Sad|Surprise|Neutral) \d+%$/);
    assert.equal(card.side, 48);
    assert.ok(card.greys > 20, `the crop preview shows a face (${card.greys} grey levels)`);
  }
}

/**
 * The page, with its camera section ready. Init scripts keep every getUserMedia stream in
 * window.testStreams; make getUserMedia fail with a DOMException named window.testCameraFault
 * when that is set; count the frames posted to workers in window.testFramesSent and the video
 * frame callbacks waiting in window.testFrameCallbacks(); and report the tab hidden while
 * window.testHidden is true (with a 'visibilitychange' dispatched by the test, as the browser
 * would).
 */
async function openCameraPage(browser, server) {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.testFramesSent = 0;
    const postMessage = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (message, ...rest) {
      if (message?.type === 'frame') window.testFramesSent += 1;
      return postMessage.call(this, message, ...rest);
    };
    const waiting = new Set();
    window.testFrameCallbacks = () => waiting.size;
    const { requestVideoFrameCallback, cancelVideoFrameCallback } = HTMLVideoElement.prototype;
    HTMLVideoElement.prototype.requestVideoFrameCallback = function (callback) {
      const handle = requestVideoFrameCallback.call(this, (...args) => {
        waiting.delete(handle);
        callback(...args);
      });
      waiting.add(handle);
      return handle;
    };
    HTMLVideoElement.prototype.cancelVideoFrameCallback = function (handle) {
      waiting.delete(handle);
      cancelVideoFrameCallback.call(this, handle);
    };
    window.testHidden = false;
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (window.testHidden ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.testHidden });
    const getUserMedia = navigator.mediaDevices?.getUserMedia?.bind(navigator.mediaDevices);
    if (!getUserMedia) return;
    window.testStreams = [];
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      if (window.testCameraFault) throw new DOMException(`${window.testCameraFault} (injected by the test)`, window.testCameraFault);
      const stream = await getUserMedia(constraints);
      window.testStreams.push(stream);
      return stream;
    };
  });
  const { page, errors } = await openPage(context, server.url);
  await page.waitForSelector('#camera[data-state="off"]');
  return { page, errors };
}

/** Runs `body({ server, browser })` with a fake camera that films the test scene. */
async function withFakeCamera(body) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-camera-'));
  const video = path.join(dir, 'faces.y4m');
  await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
  try {
    return await withBrowser(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`], body);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const framesShown = (page) => page.$eval('#camera', (section) => Number(section.dataset.frames ?? 0));

/** Waits until the page has shown `more` video frames beyond those shown so far. */
async function moreFrames(page, more) {
  const before = await framesShown(page);
  await page.waitForFunction(([n]) => Number(document.querySelector('#camera').dataset.frames ?? 0) >= n, [before + more], { timeout: 30_000 });
}

/** The page's camera workers as they start: `latest()` is the one started last. */
function watchCameraWorkers(page) {
  const isCameraWorker = (worker) => new URL(worker.url()).pathname.startsWith(`/${CAMERA_WORKER}`);
  const workers = page.workers().filter(isCameraWorker);
  page.on('worker', (worker) => { if (isCameraWorker(worker)) workers.push(worker); });
  return { latest: () => workers.at(-1), count: () => workers.length };
}

/** Waits until a camera worker beyond the `count` seen so far has started; resolves to it. */
async function nextCameraWorker(page, workers, count) {
  for (let tries = 0; workers.count() <= count; tries++) {
    if (tries > 600) throw new Error('no fresh camera worker started');
    await page.waitForTimeout(100);
  }
  return workers.latest();
}

/** Makes `worker` crash: an error that no handler catches, thrown in its global scope. */
const crash = (worker) => worker.evaluate(() => { setTimeout(() => { throw new Error('a fault injected by the test'); }); });

const injected = (errors) => errors.filter((e) => !/a fault injected by the test|a stand-in for a Rust panic/.test(e));

test('camera: the fake camera\'s faces are boxed, cropped and classified; Stop releases the camera', () => withFakeCamera(async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  await page.click('#camera-start');
  await page.waitForSelector('#camera[data-state="on"]', { timeout: 15_000 });
  await page.waitForSelector(`#camera[data-faces="${SCENE_FACES}"]`, { timeout: 15_000 });
  assert.equal(await page.isVisible('#camera-video'), true);
  assert.equal(await page.isVisible('#camera-stop'), true);
  assert.equal(await page.locator('.camera-box:not([hidden])').count(), SCENE_FACES);
  const boxes = await page.$$eval('.camera-box:not([hidden])', (nodes) => nodes.map((n) => n.getBoundingClientRect()));
  const stage = await page.$eval('#camera-stage', (n) => n.getBoundingClientRect());
  for (const box of boxes) {
    assert.ok(box.width > stage.width / 8 && box.width < stage.width / 2, `a face-sized box: ${JSON.stringify(box)}`);
  }
  assertFaces(await faceCards(page), SCENE_FACES);
  assert.equal(await page.isVisible('#camera-no-face'), false);
  // Let a few frames go by for a steady frame rate before reading the figures.
  await page.waitForFunction(() => / \d+ frames\/s$/.test(document.querySelector('#camera-stats').textContent) && !/ 0 frames\/s$/.test(document.querySelector('#camera-stats').textContent), null, { timeout: 15_000 });
  const stats = await page.textContent('#camera-stats');
  console.log(`camera (Chromium, ${os.cpus().length} cores): ${stats}`);
  // Three faces cost as much to follow as to search for, so every frame is searched whole.
  assert.match(stats, / \+ find [\d.]+ \(whole frame in 100% of frames\) \+ /);
  if (process.env.UPDATE_SCREENSHOTS) {
    await page.setViewportSize({ width: 1100, height: 900 });
    await page.locator('#camera').screenshot({ path: path.join(HERE, 'screenshots/camera.png') });
  }

  await page.click('#camera-stop');
  await page.waitForSelector('#camera[data-state="off"]');
  const tracks = await page.evaluate(() => window.testStreams.flatMap((s) => s.getTracks().map((t) => t.readyState)));
  assert.ok(tracks.length > 0 && tracks.every((state) => state === 'ended'), `every camera track ended: ${tracks}`);
  assert.equal(await page.$eval('#camera-video', (v) => v.srcObject), null);
  assert.equal(await page.isVisible('#camera-start'), true);
  assert.equal(await page.locator('.camera-box:not([hidden])').count(), 0);

  // The camera goes away mid-stream (unplugged): the page says so and lets go of it.
  await page.click('#camera-start');
  await page.waitForSelector(`#camera[data-state="on"][data-faces="${SCENE_FACES}"]`, { timeout: 15_000 });
  await page.evaluate(() => window.testStreams.at(-1).getVideoTracks()[0].dispatchEvent(new Event('ended')));
  await page.waitForSelector('#camera[data-state="lost"]');
  assert.match(await page.textContent('#camera-status'), /camera stopped.*Start camera to try again/);
  assert.ok(await page.evaluate(() => window.testStreams.at(-1).getTracks().every((t) => t.readyState === 'ended')));
  assert.deepEqual(errors, []);
}));

test('camera: with no camera at all, the page says so', () => withBrowser(['--use-fake-ui-for-media-stream'], async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  await page.click('#camera-start');
  await page.waitForSelector('#camera:is([data-state="no-camera"], [data-state="busy"])', { timeout: 15_000 });
  assert.equal(await page.getAttribute('#camera', 'data-state'), 'no-camera', await page.textContent('#camera-status'));
  assert.match(await page.textContent('#camera-status'), /No camera found/);
  assert.deepEqual(errors, []);
}));

test('camera: a denied permission says how to re-allow it; photos, with and without faces, still work', () => withBrowser(['--use-fake-device-for-media-stream', '--deny-permission-prompts'], async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  await page.click('#camera-start');
  await page.waitForSelector('#camera[data-state="denied"]', { timeout: 15_000 });
  assert.match(await page.textContent('#camera-status'), /blocked.*address bar.*Allow.*Start camera again/s);
  assert.equal(await page.isVisible('#camera-start'), true);

  const scene = await readScene();
  await page.setInputFiles('#camera-photo', { name: 'faces.png', mimeType: 'image/png', buffer: png(scene) });
  await page.waitForSelector(`#camera[data-state="photo"][data-faces="${SCENE_FACES}"]`);
  const plain = await faceCards(page);
  assertFaces(plain, SCENE_FACES);
  assert.equal(await page.isVisible('#camera-photo-canvas'), true);
  assert.equal(await page.inputValue('#model-select'), 'default', 'a photo is classified by the accurate model, not the camera\'s fast one');

  // Test-time augmentation: the photo on show is classified again, each face averaged with
  // its mirror image; unticking gives back the plain probabilities.
  await page.check('#camera-mirror-tta');
  await page.waitForFunction(() => document.querySelector('#camera-stats').textContent.includes('classify (with mirror)'));
  const mirrored = await faceCards(page);
  assertFaces(mirrored, SCENE_FACES);
  assert.notDeepEqual(mirrored.map((c) => c.probs), plain.map((c) => c.probs));
  await page.uncheck('#camera-mirror-tta');
  await page.waitForFunction(() => !document.querySelector('#camera-stats').textContent.includes('with mirror'));
  assert.deepEqual((await faceCards(page)).map((c) => c.probs), plain.map((c) => c.probs));

  const blank = { ...scene, grey: Buffer.alloc(scene.grey.length, 128) };
  await page.setInputFiles('#camera-photo', { name: 'wall.png', mimeType: 'image/png', buffer: png(blank) });
  await page.waitForSelector('#camera[data-faces="0"]');
  assert.equal(await page.isVisible('#camera-no-face'), true);
  assert.equal((await faceCards(page)).length, 0);

  await page.setInputFiles('#camera-photo', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not an image') });
  await page.waitForFunction(() => /Could not read notes\.png as a photo/.test(document.querySelector('#camera-status').textContent));
  assert.deepEqual(errors, []);
}));

test('camera: the worker on every core (cross-origin isolated page) classifies a photo exactly as on one thread', async () => {
  const scene = await readScene();
  const classifyPhoto = (isolated) => withBrowser(['--use-fake-device-for-media-stream', '--deny-permission-prompts'], async ({ server, browser }) => {
    const { page, errors } = await openCameraPage(browser, server);
    await page.setInputFiles('#camera-photo', { name: 'faces.png', mimeType: 'image/png', buffer: png(scene) });
    await page.waitForSelector(`#camera[data-state="photo"][data-faces="${SCENE_FACES}"]`);
    const cards = await faceCards(page);
    assertFaces(cards, SCENE_FACES);
    const stats = await page.textContent('#camera-stats');
    assert.deepEqual(errors, []);
    // The default model's weights are 8-bit, so the worker classifies in integer arithmetic.
    assert.match(stats, / in 8-bit arithmetic in a worker /);
    assert.match(stats, / \+ find [\d.]+ \(whole frame\) \+ /);
    return { probs: cards.map((card) => card.probs), threads: Number(/ on (\d+) threads?/.exec(stats)[1]) };
  }, { isolated });
  const threaded = await classifyPhoto(true);
  const single = await classifyPhoto(false);
  assert.equal(single.threads, 1);
  assert.equal(threaded.threads, os.cpus().length, 'one pool thread per core');
  assert.deepEqual(threaded.probs, single.probs);
});

test('camera: each way the camera can fail to start has its own message, and Start stays at hand', () => withBrowser(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'], async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  // As the browsers name them (https://w3c.github.io/mediacapture-main/#dom-mediadevices-getusermedia).
  const faults = [
    ['NotAllowedError', 'denied', /blocked for this page.*Allow/],
    ['SecurityError', 'denied', /blocked for this page.*Allow/],
    ['NotFoundError', 'no-camera', /No camera found/],
    ['OverconstrainedError', 'no-camera', /No camera found/],
    ['NotReadableError', 'busy', /in use by another app/],
    ['AbortError', 'busy', /in use by another app/],
  ];
  const messages = new Map();
  for (const [name, state, message] of faults) {
    await page.evaluate((fault) => { window.testCameraFault = fault; }, name);
    await page.click('#camera-start');
    await page.waitForSelector(`#camera[data-state="${state}"]`, { timeout: 15_000 });
    const status = await page.textContent('#camera-status');
    assert.match(status, message, name);
    assert.match(status, new RegExp(`\\(${name} \\(injected by the test\\)\\)$`), 'the browser\'s own words follow');
    assert.equal(await page.isVisible('#camera-start'), true, name);
    assert.equal(await page.$eval('#camera-status', (n) => n.classList.contains('error')), true, name);
    messages.set(state, status.slice(0, status.lastIndexOf(` (${name}`)));
    // Back to a state the next fault changes from.
    await page.evaluate(() => { window.testCameraFault = null; });
    await page.click('#camera-start');
    await page.waitForSelector('#camera[data-state="on"]', { timeout: 15_000 });
    await page.click('#camera-stop');
  }
  // A page that is not a secure context has no getUserMedia at all.
  await page.evaluate(() => { navigator.mediaDevices.getUserMedia = undefined; });
  await page.click('#camera-start');
  await page.waitForSelector('#camera[data-state="insecure"]');
  messages.set('insecure', await page.textContent('#camera-status'));
  assert.match(messages.get('insecure'), /secure page.*A photo still works/);
  assert.equal(new Set(messages.values()).size, 4, 'four states, four messages');
  assert.deepEqual(errors, []);
}));

test('camera: a hidden tab sends no frame to the worker; shown again, the video goes on', () => withFakeCamera(async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  await page.click('#camera-start');
  await page.waitForSelector(`#camera[data-state="on"][data-faces="${SCENE_FACES}"]`, { timeout: 15_000 });
  await moreFrames(page, 5);

  const hide = (...states) => page.evaluate((values) => {
    for (const value of values) {
      window.testHidden = value;
      document.dispatchEvent(new Event('visibilitychange'));
    }
  }, states);
  await hide(true);
  // The frame on its way when the tab was hidden still comes back; after it, nothing is sent,
  // and no video frame is waited for.
  await page.waitForFunction(() => Number(document.querySelector('#camera').dataset.frames) === window.testFramesSent, null, { timeout: 15_000 });
  await page.waitForFunction(() => window.testFrameCallbacks() === 0, null, { timeout: 15_000 });
  const sent = await page.evaluate(() => window.testFramesSent);
  // A tab that kept working would send a frame every few tens of milliseconds; two seconds
  // leave no doubt, and a slow machine can only make this pass less surely, never fail.
  await page.waitForTimeout(2000);
  assert.equal(await page.evaluate(() => window.testFramesSent), sent, 'no frame sent while hidden');
  assert.equal(await page.getAttribute('#camera', 'data-state'), 'on', 'the camera stays open');
  assert.equal(await page.evaluate(() => window.testStreams.at(-1).getVideoTracks()[0].readyState), 'live');

  await hide(false);
  await moreFrames(page, 5);
  assert.ok(await page.evaluate(() => window.testFramesSent) > sent);
  assert.equal(await page.getAttribute('#camera', 'data-faces'), String(SCENE_FACES));

  // Hidden and shown again before the next video frame: still one loop waiting for frames, not two.
  await hide(true, false);
  await moreFrames(page, 10);
  assert.equal(await page.evaluate(() => window.testFrameCallbacks()), 1);
  assert.deepEqual(errors, []);
}));

test('camera: a crashed worker is replaced with the detector, the model and the mirror setting, and the video goes on', () => withFakeCamera(async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  const workers = watchCameraWorkers(page);
  await page.click('#camera-start');
  await page.waitForSelector(`#camera[data-state="on"][data-faces="${SCENE_FACES}"]`, { timeout: 15_000 });
  await page.check('#camera-mirror-tta');
  await page.waitForFunction(() => document.querySelector('#camera-stats').textContent.includes('classify (with mirror)'));

  // Crash it mid-stream: Playwright evaluates in the worker's own global scope, where an error
  // thrown from a timer is one no handler catches, as a bug or a wasm thread's crash would be.
  const first = workers.latest();
  const closed = new Promise((resolve) => first.once('close', resolve));
  await crash(first);
  await page.waitForSelector('#camera[data-worker-restarts="1"]', { timeout: 15_000 });
  await closed; // the crashed worker is terminated, not left holding its memory
  const fresh = await nextCameraWorker(page, workers, 1);
  assert.notEqual(fresh, first);
  await moreFrames(page, 5);
  assert.equal(await page.getAttribute('#camera', 'data-state'), 'on');
  assert.equal(await page.getAttribute('#camera', 'data-faces'), String(SCENE_FACES), 'the fresh worker has the detector');
  const stats = await page.textContent('#camera-stats');
  assert.match(stats, /classify \(with mirror\)/, 'the fresh worker has the mirror setting');
  assert.match(stats, / in 8-bit arithmetic /, 'the fresh worker has the model, as int8');
  assertFaces(await faceCards(page), SCENE_FACES);

  // A trap in wasm (a Rust panic) poisons the instance, so the worker reports it as a crash.
  // No input makes the engine panic on purpose: the stand-in is the RuntimeError a trap
  // throws, from the canvas call the frame handler makes just before the wasm.
  await page.click('#camera-stop');
  await page.setInputFiles('#camera-photo', { name: 'faces.png', mimeType: 'image/png', buffer: png(await readScene()) });
  await page.waitForSelector(`#camera[data-state="photo"][data-faces="${SCENE_FACES}"]`);
  await fresh.evaluate(() => {
    const { getImageData } = OffscreenCanvasRenderingContext2D.prototype;
    OffscreenCanvasRenderingContext2D.prototype.getImageData = function () {
      OffscreenCanvasRenderingContext2D.prototype.getImageData = getImageData;
      throw new WebAssembly.RuntimeError('unreachable (a stand-in for a Rust panic)');
    };
  });
  await page.uncheck('#camera-mirror-tta'); // classifies the photo again, and traps
  await page.waitForSelector('#camera[data-worker-restarts="2"]', { timeout: 15_000 });
  await page.waitForFunction(() => /classify \d/.test(document.querySelector('#camera-stats').textContent), null, { timeout: 15_000 });
  assert.equal(await page.getAttribute('#camera', 'data-state'), 'photo', 'the photo is classified again, no error shown');
  assertFaces(await faceCards(page), SCENE_FACES);
  assert.deepEqual(injected(errors), []);
}));

test('camera: a worker that keeps crashing is given up with a message, not restarted for ever', () => withFakeCamera(async ({ server, browser }) => {
  const { page, errors } = await openCameraPage(browser, server);
  const workers = watchCameraWorkers(page);
  await page.click('#camera-start');
  await page.waitForSelector(`#camera[data-state="on"][data-faces="${SCENE_FACES}"]`, { timeout: 15_000 });
  for (let crashes = 1; crashes <= 3; crashes++) {
    await crash(workers.latest());
    await page.waitForSelector(`#camera[data-worker-restarts="${crashes}"]`, { timeout: 15_000 });
    await nextCameraWorker(page, workers, crashes);
  }
  const last = workers.latest();
  const closed = new Promise((resolve) => last.once('close', resolve));
  await crash(last);
  await page.waitForSelector('#camera[data-state="crashed"]', { timeout: 15_000 });
  assert.match(await page.textContent('#camera-status'), /stopped working.*Reload the page.*a fault injected by the test/);
  assert.equal(await page.isDisabled('#camera-start'), true);
  assert.equal(await page.isDisabled('#camera-photo-button'), true);
  assert.ok(await page.evaluate(() => window.testStreams.at(-1).getTracks().every((t) => t.readyState === 'ended')), 'the camera is released');
  await closed;
  await page.waitForTimeout(1000);
  assert.equal(workers.count(), 4, 'no fifth worker');
  assert.equal(await page.getAttribute('#camera', 'data-worker-restarts'), '3');
  assert.deepEqual(injected(errors), []);
}));
