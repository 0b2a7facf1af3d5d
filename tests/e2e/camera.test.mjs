// The camera section, end to end in headless Chromium: a fake camera plays a video built here
// from tests/fixtures/face_scene.pgm (three FER2013 faces on a gradient); the page must box the
// three faces, show seven probabilities summing to 1 and the 48x48 crop for each, report its
// speed, and release the camera on Stop. Also: permission denied, and a photo (with faces, and
// without) through the same pipeline, with and without mirror test-time augmentation, and the
// same photo classified alike by the camera worker's multi-threaded and single-threaded
// engines. No console errors throughout.
//
// UPDATE_SCREENSHOTS=1 node --test tests/e2e/camera.test.mjs also rewrites
// tests/e2e/screenshots/camera.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withBrowser, openPage } from './harness.mjs';
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

/** The page, with its camera section ready and every getUserMedia stream kept in window.testStreams. */
async function openCameraPage(browser, server) {
  const context = await browser.newContext();
  // Keep every stream the page gets, to check that Stop ends its tracks.
  await context.addInitScript(() => {
    const getUserMedia = navigator.mediaDevices?.getUserMedia?.bind(navigator.mediaDevices);
    if (!getUserMedia) return;
    window.testStreams = [];
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      const stream = await getUserMedia(constraints);
      window.testStreams.push(stream);
      return stream;
    };
  });
  const { page, errors } = await openPage(context, server.url);
  await page.waitForSelector('#camera[data-state="off"]');
  return { page, errors };
}

test('camera: the fake camera\'s faces are boxed, cropped and classified; Stop releases the camera', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-camera-'));
  const video = path.join(dir, 'faces.y4m');
  await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
  const fakeCamera = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`];
  try {
    await withBrowser(fakeCamera, async ({ server, browser }) => {
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
      console.log(`camera (Chromium, ${os.cpus().length} cores): ${await page.textContent('#camera-stats')}`);
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
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

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
    return { probs: cards.map((card) => card.probs), threads: Number(/ on (\d+) threads?/.exec(stats)[1]) };
  }, { isolated });
  const threaded = await classifyPhoto(true);
  const single = await classifyPhoto(false);
  assert.equal(single.threads, 1);
  assert.equal(threaded.threads, os.cpus().length, 'one pool thread per core');
  assert.deepEqual(threaded.probs, single.probs);
});
