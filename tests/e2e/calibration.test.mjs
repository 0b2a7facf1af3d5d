// "Calibrate to my face", end to end in headless Chromium, with a camera the test controls
// (fake-face-camera.mjs): one face that poses whichever expression the page asks for, under a
// shift in appearance FER2013's faces do not have. The page captures the seven expressions,
// the review deletes, redoes and skips, the library's `calibrate` calibrates the camera's model,
// and the held-out captures must be read better after than before, with at most 5% of the
// library's reference faces read by the personal weights; the camera then classifies with
// "Calibrated to you", which survives a reload, downloads like any model, is replaced by
// calibrating again and is deleted with its captures by one button. Also measured on a steady face: how
// often the label changes per 100 frames, from the model's raw output, the smoothed
// probabilities, and the label the tracks hold. No console errors throughout.
//
// The figures (capture and fine-tune times, accuracies, label changes) are printed as
// `calibration figures: {...}` for the README and the closing notes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { withBrowser, openPage, firstModel } from './harness.mjs';
import { fakeCamera, fakeCameraArgument } from './fake-face-camera.mjs';

const EMOTIONS = 7;
const SAD = 4;
const STEADY_FRAMES = 150;

/** The calibration's IndexedDB entries: [{ labels, modelBytes (length), report }]. */
function storedCalibration(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('fer-cnn-personal');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const database = open.result;
      const all = database.transaction('personal').objectStore('personal').getAll();
      all.onerror = () => reject(all.error);
      all.onsuccess = () => {
        resolve(all.result.map(({ labels, modelBytes, report }) => ({ labels: Array.from(labels), modelBytes: modelBytes.length, report })));
        database.close();
      };
    };
  }));
}

/**
 * On a steady face posing `expression`, over `frames` video frames: label changes per 100
 * frames of the model's own output for each crop (the default model, run here on the crops the
 * camera worker returns), of the smoothed probabilities' leader, and of the label shown.
 */
function labelChanges(page, expression, frames) {
  return page.evaluate(async ({ expression, frames }) => {
    window.testExpression = expression;
    const fer = await import(new URL('pkg/fer_cnn.js', location.href));
    await fer.default(); // the page itself may run the other build
    const model = fer.Model.fromBytes(new Uint8Array(await (await fetch('models/default.safetensors')).arrayBuffer()));
    model.setInt8Inference(true); // as the library classifies an int8 model
    const camera = document.querySelector('#camera');
    let settle = 10; // frames for the new expression to reach the tracks
    const { EXPRESSIONS } = await import(new URL('lib/index.js', location.href));
    const records = await new Promise((resolve) => {
      const seen = [];
      const onFaces = ({ detail: { faces } }) => {
        if (faces.length !== 1 || settle-- > 0) return;
        const [face] = faces;
        const smoothed = EXPRESSIONS.map((name) => face.probabilities[name]);
        seen.push({ crop: face.crop, smoothed: fer.argmax(smoothed), label: EXPRESSIONS.indexOf(face.expression) });
        if (seen.length === frames) {
          camera.removeEventListener('camera-faces', onFaces);
          resolve(seen);
        }
      };
      camera.addEventListener('camera-faces', onFaces);
    });
    const raw = records.map(({ crop }) => fer.argmax(model.predict(crop, 'none')));
    model.free();
    const per100 = (sequence) => (100 * sequence.slice(1).filter((v, i) => v !== sequence[i]).length) / (sequence.length - 1);
    return {
      frames,
      raw: per100(raw),
      smoothed: per100(records.map((r) => r.smoothed)),
      label: per100(records.map((r) => r.label)),
      labels: [...new Set(records.map((r) => r.label))],
    };
  }, { expression, frames });
}

const captureCounts = (page) => page.$$eval('#calibrate-review-list .calibrate-row', (rows) => rows.map((row) => row.querySelectorAll('.calibrate-capture').length));
const modelMenu = (page) => page.$eval('#model-select', (select) => ({ value: select.value, options: [...select.options].map((o) => [o.value, o.textContent]) }));
const dataset = (page) => page.$eval('#calibrate', (panel) => ({ ...panel.dataset }));

/** Clicks Fine-tune and waits for the result; resolves to #calibrate's dataset. */
async function fineTune(page) {
  await page.click('#calibrate-fit');
  await page.waitForSelector('#calibrate[data-step="fitting"]');
  await page.waitForSelector('#calibrate[data-step="idle"]', { timeout: 180_000 });
  assert.equal(await page.isVisible('#calibrate-error'), false, await page.textContent('#calibrate-error'));
  return dataset(page);
}

/** Waits until the face card's held label is `label`; the camera classifies with the current model. */
async function waitForLabel(page, label) {
  await page.evaluate((value) => { window.testExpression = value; }, label);
  await page.waitForFunction((value) => document.querySelector('#camera-faces .camera-face:not([hidden])')?.dataset.label === String(value), label, { timeout: 30_000 });
}

test('calibration: capture, review, fine-tune; the personal model is used, kept, replaced and deleted', { timeout: 900_000 }, () => withBrowser([], async ({ server, browser }) => {
  const context = await browser.newContext({ viewport: { width: 1200, height: 1000 } });
  await context.addInitScript(fakeCamera, await fakeCameraArgument());
  const { page, errors } = await openPage(context, server.url);
  const figures = {};
  try {
    await calibrateUseKeepReplaceDelete(page, figures);
  } finally {
    console.log(`calibration figures: ${JSON.stringify(figures)}`);
  }
  assert.deepEqual(errors, []);
}));

async function calibrateUseKeepReplaceDelete(page, figures) {

  // Before anything: the default model on a steady face, and what the tracks make of it.
  await page.click('#camera-start');
  await page.waitForSelector('#camera[data-state="on"][data-faces="1"]', { timeout: 30_000 });
  figures.steadyFace = await labelChanges(page, SAD, STEADY_FRAMES);
  assert.ok(figures.steadyFace.label <= figures.steadyFace.smoothed, 'the held label changes no more often than the leading probability');
  assert.equal(await page.isDisabled('#calibrate-start'), false);

  // Capture: seven expressions, each a countdown then a few seconds of the fake face posing it.
  const asked = [];
  const captureStarted = Date.now();
  await page.click('#calibrate-start');
  for (let label = 0; label < EMOTIONS; label++) {
    await page.waitForSelector(`#calibrate[data-step="capture"][data-expression="${label}"]`, { timeout: 60_000 });
    asked.push(await page.textContent('#calibrate-name'));
    assert.match(await page.textContent('#calibrate-hint'), /\w/);
  }
  await page.waitForSelector('#calibrate[data-step="review"]', { timeout: 60_000 });
  figures.captureSeconds = (Date.now() - captureStarted) / 1000;
  assert.deepEqual(asked, await page.evaluate(async () => await import(new URL('pkg/fer_cnn.js', location.href)).then(async (fer) => { await fer.default(); return fer.emotions(); })));
  assert.match(await page.textContent('#calibrate-capture-status'), /^\d+ captured/);

  // Review: every expression has captures; one deleted, one expression redone, one skipped.
  let counts = await captureCounts(page);
  figures.capturesPerExpression = counts;
  assert.equal(counts.length, EMOTIONS);
  assert.ok(counts.every((n) => n >= 4), `several captures of each expression: ${counts}`);
  await page.click('#calibrate-review-list .calibrate-row[data-label="6"] .calibrate-capture');
  assert.deepEqual(await captureCounts(page), counts.map((n, label) => (label === 6 ? n - 1 : n)));
  await page.click('#calibrate-review-list .calibrate-row[data-label="2"] .calibrate-redo');
  await page.waitForSelector('#calibrate[data-step="capture"][data-expression="2"]', { timeout: 30_000 });
  await page.waitForSelector('#calibrate[data-step="review"]', { timeout: 30_000 });
  await page.click('#calibrate-review-list .calibrate-row[data-label="1"] .calibrate-skip');
  counts = await captureCounts(page);
  assert.equal(counts[1], 0, 'Disgust skipped');
  assert.ok(counts[2] >= 4, 'Fear captured again');
  assert.match(await page.textContent('#calibrate-review-list .calibrate-row[data-label="1"] h3'), /skipped/);

  // Fine-tune: better on the held-out captures, and in use.
  const first = await fineTune(page);
  figures.fineTuneSeconds = Number(first.seconds);
  figures.heldOut = { n: Number(first.heldOutN), before: Number(first.heldOutBefore), after: Number(first.heldOutAfter) };
  assert.ok(figures.heldOut.after > figures.heldOut.before, `held-out accuracy rises: ${JSON.stringify(figures.heldOut)}`);
  assert.match(await page.textContent('#calibrate-result'), /Calibrated to you.*held-out captures \(\d+\): [\d.]+% right before, [\d.]+% after/);
  let menu = await modelMenu(page);
  assert.equal(menu.value, 'personal');
  assert.deepEqual(menu.options.find(([value]) => value === 'personal'), ['personal', 'Calibrated to you']);
  const [stored] = await storedCalibration(page);
  assert.equal(stored.labels.length, counts.reduce((a, b) => a + b, 0), 'the captures are kept with the model');
  assert.ok(stored.modelBytes > 100_000);

  // The camera classifies with it: an expression the default model misread on every held-out
  // capture, and the calibrated one read right, is now the label shown.
  const { before, after } = stored.report.held_out_accuracy;
  const fixed = before.per_class.findIndex((share, label) => share === 0 && after.per_class[label] === 1 && counts[label] > 0);
  assert.ok(fixed >= 0, `an expression the calibration fixed: before ${before.per_class}, after ${after.per_class}`);
  await waitForLabel(page, fixed);

  // It downloads like any model; at 8 bits, as it is stored (the default model's precision).
  await page.selectOption('#model-download-precision', 'int8');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#model-download')]);
  assert.match(download.suggestedFilename(), /-personal-int8\.safetensors$/);
  assert.equal((await fs.stat(await download.path())).size, stored.modelBytes);

  // After a reload: still there, still in use, selectable, its captures reviewable.
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  menu = await modelMenu(page);
  assert.equal(menu.value, 'personal');
  assert.match(await page.textContent('#calibrate-result'), /^Kept from .*Calibrated to you.*and in use/);
  await page.selectOption('#model-select', 'default');
  await page.selectOption('#model-select', 'personal');
  assert.match(await page.textContent('#model-info'), /parameters/);
  await page.click('#calibrate-review-open');
  assert.deepEqual(await captureCounts(page), counts);

  // What it can cost on other people's faces: the share of the library's reference faces its
  // weights would read, shown, and small.
  assert.match(await page.textContent('#calibrate-result'), /Other people’s faces \(\d+ reference faces\): [\d.]+% would be read by your calibration/);
  assert.ok(Number(first.referenceReadPersonally) <= 0.05, `reference faces read personally: ${first.referenceReadPersonally}`);
  figures.referenceReadPersonally = Number(first.referenceReadPersonally);

  // Calibrating again replaces it, from the same captures.
  const second = await fineTune(page);
  const entries = await storedCalibration(page);
  assert.equal(entries.length, 1, 'one calibrated model, replaced');
  assert.equal((await modelMenu(page)).options.filter(([value]) => value === 'personal').length, 1);
  assert.ok(Number(second.heldOutAfter) > Number(second.heldOutBefore));

  // Delete: the captures and the model, from IndexedDB and the menu.
  await page.click('#calibrate-delete');
  await page.waitForFunction(() => !document.querySelector('#model-select option[value="personal"]'));
  assert.equal((await modelMenu(page)).value, await firstModel(page));
  assert.deepEqual(await storedCalibration(page), []);
  assert.match(await page.textContent('#calibrate-result'), /deleted/);
  assert.equal(await page.isVisible('#calibrate-review-open'), false);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  assert.equal((await modelMenu(page)).options.some(([value]) => value === 'personal'), false);
  assert.equal(await page.isVisible('#calibrate-delete'), false);
}
