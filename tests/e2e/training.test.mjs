// Training in the tab, end to end: drop a small generated FER2013 file (gzip, with Training,
// PublicTest and PrivateTest rows and a few malformed ones), check the summary and the bad-row
// report, train one epoch of `seed`, see the charts, confusion matrix and predictions update,
// download the model, refuse a broken model file, reload and find the model restored from
// IndexedDB; no console errors or window error events throughout.
//
// UPDATE_SCREENSHOTS=1 node --test tests/e2e/training.test.mjs also rewrites the README's
// screenshots in tests/e2e/screenshots/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { withBrowser, openPage, barFacesCsvLines, dropFile, firstModel } from './harness.mjs';
import { withF32Decimals } from '../../www/js/f32.js';

const SCREENSHOTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'screenshots');
// The native CLI, which `cargo test --release` builds before these tests run.
const FER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../target/release/fer');
const fer = (args) => execFileSync(FER, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ROWS = { Training: 280, PublicTest: 56, PrivateTest: 28 };
const EMOTIONS = ['Angry', 'Disgust', 'Fear', 'Happy', 'Sad', 'Surprise', 'Neutral'];

/** A FER2013-format CSV of bar faces (harness.mjs), then the malformed rows, each on a known line. */
function fer2013Csv() {
  const lines = barFacesCsvLines(ROWS);
  const good = Array(2304).fill(100).join(' ');
  const bad = [
    [`9,${good},Training`, 'emotion'],
    [`3,${Array(2303).fill(100).join(' ')},Training`, 'pixel'],
    [`3,${good.replace(/^100/, '300')},Training`, '300'],
    [`3,${good},Validation`, 'usage'],
    [`3,${good}`, 'column'],
  ];
  const badLines = bad.map(([text, reason]) => {
    lines.push(text);
    return { line: lines.length, reason };
  });
  return { csv: `${lines.join('\n')}\n`, badLines };
}

test('drop FER2013, train seed for an epoch, keep the model across a reload', () => withBrowser([], async ({ server, browser }) => {
  const { csv, badLines } = fer2013Csv();
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const { page, errors } = await openPage(context, server.url);

  // A file that is not FER2013 at all is refused with a message.
  await dropFile(page, '#drop-zone', 'notes.txt', Buffer.from('hello\nworld\n'));
  await page.waitForSelector('#load-error:not([hidden])');
  assert.match(await page.textContent('#load-error'), /Could not load "notes\.txt"/);

  // Load: the summary counts each Usage, the bad rows are listed with line and reason.
  await dropFile(page, '#drop-zone', 'fer2013.csv.gz', zlib.gzipSync(csv));
  await page.waitForSelector('#load-summary:not([hidden])', { timeout: 30_000 });
  assert.equal(await page.isHidden('#load-error'), true);
  const good = ROWS.Training + ROWS.PublicTest + ROWS.PrivateTest;
  assert.match(await page.textContent('#load-totals'), new RegExp(`Loaded ${good} faces from fer2013\\.csv\\.gz`));
  const totals = await page.$$eval('#usage-table tfoot td', (cells) => cells.map((c) => c.textContent));
  assert.deepEqual(totals, [ROWS.Training, ROWS.PublicTest, ROWS.PrivateTest, good].map(String));
  assert.equal(await page.$$eval('#usage-table tbody tr', (rows) => rows.length), 7);
  assert.match(await page.textContent('#bad-rows summary'), /^5 bad rows skipped/);
  const badRows = await page.$$eval('#bad-row-list li', (items) => items.map((i) => i.textContent));
  assert.equal(badRows.length, badLines.length);
  badLines.forEach(({ line, reason }, i) => {
    assert.match(badRows[i], new RegExp(`^line ${line}: .*${reason}`, 'i'));
  });

  // Browse: twelve faces of each emotion.
  await page.waitForFunction(() => document.querySelectorAll('#browse-grid canvas').length === 7 * 12);

  // Every preset fills the form with its own recipe, as Rust states it (its f32s as Rust
  // writes them: see the check of the fields' text below).
  const options = withF32Decimals(await page.evaluate(async () => {
    const fer = await import('./pkg/fer_cnn.js');
    await fer.default(); // the page itself may run the other build
    return fer.trainingOptions();
  }));
  const { presets, suggested } = options;
  assert.deepEqual(presets.map((p) => p.name), await page.$$eval('#train-preset option', (o) => o.map((e) => e.value)));
  assert.equal(await page.inputValue('#train-preset'), suggested, 'the form starts on the suggested preset');
  for (const { name, recipe } of presets) {
    await page.selectOption('#train-preset', name);
    const form = await page.$eval('#train-form', (f) => Object.fromEntries([...f.elements].filter((e) => e.name).map((e) => [e.name, e.type === 'checkbox' ? e.checked : e.value])));
    const { config } = recipe;
    assert.deepEqual(
      [form.limit, form.epochs, form.batch_size, form.lr, form.optimizer, form.schedule, form.weight_decay, form.label_smoothing, form.augment, form.tta].map(String),
      [Math.min(recipe.limit ?? ROWS.Training, ROWS.Training), config.epochs, config.batch_size, config.lr, config.optimizer.type, config.schedule.type,
        config.weight_decay, config.label_smoothing, config.augment !== null, recipe.tta].map(String),
      `the form shows ${name}'s recipe`,
    );
  }
  const optimizerOf = (name) => presets.find((p) => p.name === name).recipe.config.optimizer.type;
  assert.deepEqual(['seed', 'mlp', 'deep', 'deeper'].map(optimizerOf), ['adam', 'adam', 'sgd', 'sgd']);
  // The numbers read as people write them, not as the doubles nearest Rust's f32s
  // (0.009999999776482582 for 0.01).
  const shown = async (preset) => {
    await page.selectOption('#train-preset', preset);
    return page.$eval('#train-form', (f) => ['lr', 'weight_decay', 'label_smoothing', 'mixup_alpha'].map((name) => f.elements[name].value));
  };
  assert.deepEqual(await shown('fast'), ['0.01', '0.0005', '0.1', '0']);
  assert.deepEqual(await shown('seed'), ['0.001', '0', '0', '0']);

  // Train one epoch of the paper's model on every Training face.
  await page.selectOption('#train-preset', 'seed');
  assert.equal(await page.inputValue('#train-form [name=limit]'), String(ROWS.Training));
  await page.fill('#train-form [name=epochs]', '1');
  await page.click('#train-options details summary'); // "More options"
  await page.selectOption('#train-form [name=tta]', 'flip');
  await page.click('#train-start');
  // The window narrowed and widened while the charts draw: they follow it, and no window error
  // event (a ResizeObserver loop) fires; the errors are checked at the end.
  for (const width of [700, 1000, 1200]) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForFunction((w) => Math.abs(document.querySelector('#loss-chart .uplot').offsetWidth - document.querySelector('#loss-chart').clientWidth) <= 1 &&
      document.documentElement.clientWidth <= w, width);
  }
  await page.waitForSelector('#train[data-state="finished"]', { timeout: 30_000 });
  assert.ok(Number(await page.getAttribute('#loss-chart', 'data-points')) >= 1, 'the loss chart has points');
  assert.ok(Number(await page.getAttribute('#accuracy-chart', 'data-points')) >= 1, 'the accuracy chart has points');
  const confusion = await page.$$eval('#confusion tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td:not(.class-accuracy)')].map((c) => Number(c.textContent))));
  assert.equal(confusion.length, 7);
  assert.equal(confusion.flat().reduce((a, b) => a + b, 0), ROWS.PublicTest, 'every PublicTest face is in the confusion matrix');
  assert.match(await page.textContent('#confusion-when'), /after epoch 1/);
  assert.equal(await page.$$eval('#predictions figure.good, #predictions figure.bad', (f) => f.length), 24);
  assert.match(await page.textContent('#final-result'), new RegExp(`PrivateTest accuracy: [\\d.]+% of ${ROWS.PrivateTest} faces, each with its mirror image`));
  assert.match(await page.textContent('#train-status'), /^Finished: 1 epoch/);

  // Look inside: the seed model's 8 first-layer filters and one face's activations.
  await page.waitForFunction(() => document.querySelectorAll('#filters canvas').length === 8);
  assert.ok(await page.$$eval('#activations li', (items) => items.length) >= 5);
  assert.equal(await page.$$eval('#activations .probabilities li', (items) => items.length), 7);

  // The trained model is in use and kept.
  assert.equal(await page.inputValue('#model-select'), 'trained');
  assert.match(await page.textContent('#keep-status'), /kept in this browser/);
  if (process.env.UPDATE_SCREENSHOTS) await screenshots(page);

  // Download: a safetensors file whose metadata holds the training options and results.
  const exact = await downloadModel(page, 'f32');
  assert.equal(exact.name, 'fer-seed-trained.safetensors');
  const metadata = exact.header.__metadata__;
  assert.equal(JSON.parse(metadata.training).epochs, 1);
  assert.equal(JSON.parse(metadata.training).augment, null, "seed's recipe does not augment");
  assert.equal(metadata.train_rows, String(ROWS.Training));
  assert.match(metadata.publictest_accuracy, /^0\.\d{4}$|^1\.0000$/);

  // The same model with 16-bit weights: every tensor F16, half the bytes of f32.
  const half = await downloadModel(page, 'f16');
  assert.equal(half.name, 'fer-seed-trained-f16.safetensors');
  const dtypes = new Set(Object.entries(half.header).filter(([name]) => name !== '__metadata__').map(([, t]) => t.dtype));
  assert.deepEqual([...dtypes], ['F16']);
  assert.equal(2 * half.tensorBytes, exact.tensorBytes);

  // With 8-bit weights: conv and dense weights I8 with their per-filter scales, under a third
  // of the f32 bytes; the page loads it back.
  const int8 = await downloadModel(page, 'int8');
  assert.equal(int8.name, 'fer-seed-trained-int8.safetensors');
  for (const layer of [0, 3, 7, 9]) {
    assert.equal(int8.header[`layers.${layer}.weight`]?.dtype, 'I8', `layer ${layer}'s weights`);
    assert.ok(int8.header[`layers.${layer}.weight.scale`], `layer ${layer}'s scales`);
  }
  assert.ok(3 * int8.tensorBytes < exact.tensorBytes);

  // The CLI trains the same run on the same file: its int8 file classifies every face the way
  // the page's int8 download does.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-e2e-'));
  const [csvPath, pagePath, cliPath] = ['fer2013.csv', 'page-int8.safetensors', 'cli-int8.safetensors'].map((f) => path.join(dir, f));
  await fs.writeFile(csvPath, csv);
  await fs.writeFile(pagePath, int8.bytes);
  fer(['train', '--csv', csvPath, '--preset', 'seed', '--epochs', '1', '--tta', 'flip', '--int8', '--out', cliPath]);
  const classified = (model) => JSON.parse(fer(['eval', '--model', model, '--csv', csvPath, '--json']));
  const [byPage, byCli] = [classified(pagePath), classified(cliPath)];
  assert.equal(byPage.n, good);
  assert.deepEqual(byPage.confusion, byCli.confusion);
  await fs.rm(dir, { recursive: true });
  await page.setInputFiles('#model-file', { name: 'seed-int8.safetensors', mimeType: 'application/octet-stream', buffer: int8.bytes });
  await page.waitForFunction(() => document.querySelector('#model-select').value === 'file');
  assert.match(await page.textContent('#model-info'), /^seed ·/);
  await page.selectOption('#model-select', 'trained');

  // A truncated model file is refused and the trained model stays in use.
  await page.setInputFiles('#model-file', { name: 'broken.safetensors', mimeType: 'application/octet-stream', buffer: exact.bytes.subarray(0, exact.bytes.length >> 1) });
  await page.waitForSelector('#keep-error:not([hidden])');
  assert.match(await page.textContent('#keep-error'), /"broken\.safetensors" is not a model this page can load: .+ Still using "Trained here: seed/);
  assert.equal(await page.inputValue('#model-select'), 'trained');

  // A model for other faces (2 pixels in, not 48x48) is refused naming the problem; the trained
  // model stays in use and still classifies.
  const otherSpec = { name: 'other', input: [1, 1, 2], layers: [{ type: 'flatten' }, { type: 'dense', units: 7 }], classes: 7 };
  await page.setInputFiles('#model-file', { name: 'other.safetensors', mimeType: 'application/octet-stream', buffer: safetensors(otherSpec, { 'layers.1.weight': [7, 2], 'layers.1.bias': [7] }) });
  await page.waitForFunction(() => /other\.safetensors/.test(document.querySelector('#keep-error').textContent));
  assert.match(await page.textContent('#keep-error'), /reads inputs of shape \[1, 1, 2\].*48x48.* Still using "Trained here: seed/);
  assert.equal(await page.inputValue('#model-select'), 'trained');

  // Reload: the trained model comes back from IndexedDB, still the one in use.
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  assert.equal(await page.getAttribute('#keep-status', 'data-restored'), 'true');
  assert.equal(await page.inputValue('#model-select'), 'trained');
  assert.match(await page.textContent('#model-select option[value=trained]'), /^Trained here: seed, 280 faces, 1 epoch$/);
  assert.match(await page.textContent('#model-info'), /PublicTest \d+\.\d%/);

  assert.deepEqual(errors, []);
}));

/** A safetensors model file of zero-valued F32 tensors (name → shape) with `spec` as its architecture. */
function safetensors(spec, shapes) {
  const header = { __metadata__: { format: 'fer-cnn/1', spec: JSON.stringify(spec) } };
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes)) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, json, Buffer.alloc(offset)]);
}

/** Downloads the current model with `precision` weights: its file name, bytes, safetensors
 * header and the bytes of its tensors (after the header). */
async function downloadModel(page, precision) {
  await page.selectOption('#model-download-precision', precision);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#model-download')]);
  const bytes = await fs.readFile(await download.path());
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  return { name: download.suggestedFilename(), bytes, header, tensorBytes: bytes.length - 8 - headerLength };
}

/** The README's pictures: the training half of the page on a laptop and on a phone. */
async function screenshots(page) {
  await fs.mkdir(SCREENSHOTS, { recursive: true });
  for (const id of ['data', 'train', 'learn', 'inside']) {
    await page.locator(`#${id}`).screenshot({ path: path.join(SCREENSHOTS, `${id}.png`) });
  }
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator('#learn').scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(SCREENSHOTS, 'phone-learn.png') });
  await page.setViewportSize({ width: 1200, height: 900 });
}

/** Drops the generated file on the page and starts training `preset` for `epochs`, with the
 * form's other fields as they are except `fields` and `choices` (name → value). */
async function loadAndTrain(page, preset, epochs, fields = {}, choices = {}) {
  await dropFile(page, '#drop-zone', 'fer2013.csv', Buffer.from(fer2013Csv().csv));
  await page.waitForSelector('#load-summary:not([hidden])', { timeout: 30_000 });
  await page.selectOption('#train-preset', preset);
  await page.fill('#train-form [name=epochs]', String(epochs));
  for (const [name, value] of Object.entries(fields)) await page.fill(`#train-form [name=${name}]`, String(value));
  for (const [name, value] of Object.entries(choices)) await page.selectOption(`#train-form [name=${name}]`, value);
  await page.click('#train-start');
}

test('pause, resume and stop a training run; the model trained so far is kept', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  // `deep`, in batches of 16 so that the stop almost always lands mid-epoch: its batch-norm
  // statistics are then re-measured before the model is kept.
  await loadAndTrain(page, 'deep', 1000, { batch_size: 16 });
  await page.waitForFunction(() => Number(document.querySelector('#train').dataset.epoch) > 0.5);
  await page.click('#train-pause');
  await page.waitForSelector('#train[data-state="paused"]');
  const pausedAt = await page.getAttribute('#train', 'data-epoch');
  await page.waitForTimeout(500);
  assert.equal(await page.getAttribute('#train', 'data-epoch'), pausedAt, 'no training while paused');
  assert.equal(await page.textContent('#train-pause'), 'Resume');

  await page.click('#train-pause');
  await page.waitForFunction((before) => document.querySelector('#train').dataset.epoch !== before, pausedAt);
  await page.click('#train-stop');
  await page.waitForSelector('#train[data-state="finished"]', { timeout: 30_000 });
  assert.match(await page.textContent('#train-status'), /^Stopped: [\d.]+ epochs? in/);
  assert.equal(await page.inputValue('#model-select'), 'trained');
  assert.match(await page.textContent('#model-info'), /^deep ·/);
  assert.deepEqual(errors, []);
}));

test('a run that diverges stops, says what happened and what to try, and the page keeps its model', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  await loadAndTrain(page, 'seed', 3, { lr: 1e10, batch_size: 7 }, { optimizer: 'sgd' });
  await page.waitForSelector('#train-error:not([hidden])', { timeout: 30_000 });
  assert.match(await page.textContent('#train-error'), /^training diverged at step \d+ \(epoch 1\): .* became NaN or infinite, and the weights it started from are restored\. Try a learning rate ten times lower/);
  await page.waitForSelector('#train[data-state="ready"]');
  assert.equal(await page.inputValue('#model-select'), await firstModel(page), 'nothing trained is kept; the first model stays');
  assert.deepEqual(errors, []);
}));

/** Trains `deep` (batch-norm, re-measured after the epoch) for one epoch on the generated
 * file; resolves to the page's thread count and the model's tensor bytes. */
async function trainDeep(serveOptions) {
  return withBrowser([], async ({ server, browser }) => {
    const { page, errors } = await openPage(browser, server.url);
    await loadAndTrain(page, 'deep', 1);
    await page.waitForSelector('#train[data-state="finished"]', { timeout: 60_000 });
    const threads = Number(await page.getAttribute('#train', 'data-threads'));
    const cores = await page.evaluate(() => navigator.hardwareConcurrency);
    const { bytes, tensorBytes } = await downloadModel(page, 'f32');
    assert.deepEqual(errors, []);
    // The tensors follow the JSON header; the header's metadata holds timings, which differ.
    return { threads, cores, tensors: bytes.subarray(bytes.length - tensorBytes) };
  }, serveOptions);
}

test('training on every core (cross-origin isolated page) gives the very same model as on one thread', async () => {
  const threaded = await trainDeep({ isolated: true });
  const single = await trainDeep({ isolated: false });
  assert.equal(threaded.threads, threaded.cores, 'one pool thread per logical core');
  assert.equal(single.threads, 1, 'no SharedArrayBuffer without isolation: one thread');
  assert.ok(threaded.tensors.length > 1_000_000, `${threaded.tensors.length} bytes of weights`);
  assert.ok(threaded.tensors.equals(single.tensors), 'the same weights to the bit');
});
