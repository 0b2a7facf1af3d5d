// Figures for "Calibrate to my face" (not a test; run by hand or by ./build.sh bench; about
// 7 minutes on 2 cores with the defaults):
//
//   node tests/e2e/bench-calibration.mjs [--browser chromium|firefox|both] [--rounds 3] [--csv FILE]
//
// The calibration the library's `calibrate` runs after the captures, timed in a module worker
// of a page served as ./build.sh serves it: the default model, default options, 7 expressions × 22
// captures (a realistic 3 s of each at up to 8 crops/s: crops of the test scene's faces, each
// expression lit its own way, jittered and noisy; the time does not depend on what they show),
// (a) without FER2013, as the library and the page calibrate, and (b) with it:
// `Calibration.withReference` with 250 replay and 250 check rows, from --csv FILE (FER2013's CSV, .gz or not) or from a synthetic
// FER2013-format CSV of 1,000 rows, loaded through DatasetLoader as the page loads a file.
// Each browser runs it with the multi-threaded build on a pool of one thread per core (the page
// when cross-origin isolated) and with the single-threaded build (the page on a plain static
// host). Prints the median of --rounds runs (and the range), split into the phases the library
// reports (features: the forward passes; fitting: the classifier's fit; other: set-up, final
// scoring and the export). Chromium is driven by playwright-core, Firefox ESR by geckodriver.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, workerBrowser, option, barFacesCsvLines } from './harness.mjs';
import { readScene } from './face-scene.mjs';

const EXPRESSIONS = 7;
const CAPTURES_PER_EXPRESSION = 22;
const REPLAY_ROWS = 250;
const CHECK_ROWS = 250;
const SIDE = 48;

const browsers = option('browser', 'both') === 'both' ? ['chromium', 'firefox'] : [option('browser')];
const rounds = Number(option('rounds', 3));
const csv = option('csv', null);
if (!(rounds >= 1)) throw new Error(`--rounds wants a whole number, not ${option('rounds')}`);

/**
 * The captures, expression after expression: 48x48 crops around the scene's three faces
 * (tests/fixtures/face_scene_reference.json), each expression with its own face, brightness
 * and contrast, each capture shifted and scaled a little, with noise. Deterministic.
 */
async function captures() {
  const scene = await readScene();
  const boxes = JSON.parse(await fs.readFile(fileURLToPath(new URL('../fixtures/face_scene_reference.json', import.meta.url)), 'utf8'));
  let state = 2463534242;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const faces = Buffer.alloc(EXPRESSIONS * CAPTURES_PER_EXPRESSION * SIDE * SIDE);
  const labels = Buffer.alloc(EXPRESSIONS * CAPTURES_PER_EXPRESSION);
  for (let expression = 0, i = 0; expression < EXPRESSIONS; expression++) {
    const box = boxes[expression % boxes.length];
    const [gain, offset] = [0.75 + 0.08 * expression, 20 - 6 * expression];
    for (let capture = 0; capture < CAPTURES_PER_EXPRESSION; capture++, i++) {
      const scale = (box.width / SIDE) * (0.95 + 0.1 * random());
      const [left, top] = [box.left + 6 * (random() - 0.5), box.top + 6 * (random() - 0.5)];
      for (let y = 0; y < SIDE; y++) {
        for (let x = 0; x < SIDE; x++) {
          const sx = Math.min(scene.width - 1, Math.max(0, Math.round(left + x * scale)));
          const sy = Math.min(scene.height - 1, Math.max(0, Math.round(top + y * scale)));
          const value = gain * scene.grey[sy * scene.width + sx] + offset + 16 * (random() - 0.5);
          faces[i * SIDE * SIDE + y * SIDE + x] = Math.min(255, Math.max(0, Math.round(value)));
        }
      }
      labels[i] = expression;
    }
  }
  return { faces, labels };
}

/**
 * Runs in a module worker: loads the wasm build `pkg` (the multi-threaded one with a pool of
 * one thread per core), the default model, the captures and the reference CSV, then times
 * `rounds` calibrations without and with the reference. Returns { threads, runs }.
 */
async function timeCalibrations({ origin, pkg, gzip, replayRows, checkRows, rounds }) {
  const fer = await import(`${origin}/${pkg}/fer_cnn.js`);
  await fer.default();
  const threads = pkg === 'pkg-threads' ? navigator.hardwareConcurrency : 1;
  if (pkg === 'pkg-threads') await fer.initThreadPool(threads);
  const bytes = async (url) => {
    const response = await fetch(`${origin}${url}`);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response;
  };
  const modelBytes = new Uint8Array(await (await bytes('/models/default.safetensors')).arrayBuffer());
  const faces = new Uint8Array(await (await bytes('/bench/faces.bin')).arrayBuffer());
  const labels = new Uint8Array(await (await bytes('/bench/labels.bin')).arrayBuffer());
  const loader = new fer.DatasetLoader();
  const body = (await bytes('/bench/reference.csv')).body;
  const reader = (gzip ? body.pipeThrough(new DecompressionStream('gzip')) : body).getReader();
  for (let chunk; !(chunk = await reader.read()).done;) loader.push(chunk.value);
  const data = loader.finish();
  loader.free();

  const calibrate = (withReference) => {
    const model = fer.Model.fromBytes(modelBytes); // outside the time, as in the page
    const seconds = { features: 0, fitting: 0, other: 0 };
    let started = performance.now();
    const lap = (phase) => {
      const now = performance.now();
      seconds[phase] += (now - started) / 1000;
      started = now;
    };
    const calibration = withReference
      ? fer.Calibration.withReference(model, faces, labels, undefined, data, replayRows, checkRows)
      : new fer.Calibration(model, faces, labels, undefined);
    lap('other');
    for (let phase; (phase = calibration.advance().phase) !== 'finished';) lap(phase);
    calibration.export();
    lap('other'); // the last advance (scoring after the fit) and the export
    const fitted = calibration.report().fitted.reduce((a, b) => a + b, 0);
    calibration.free();
    return { ...seconds, total: seconds.features + seconds.fitting + seconds.other, fitted };
  };
  const runs = { without: [], with: [] };
  for (let round = 0; round < rounds; round++) {
    runs.without.push(calibrate(false));
    runs.with.push(calibrate(true));
  }
  data.free();
  return { threads, runs };
}

const { faces, labels } = await captures();
const reference = csv
  ? { bytes: await fs.readFile(path.resolve(csv)), name: path.basename(csv) }
  : { bytes: Buffer.from(barFacesCsvLines({ Training: 700, PublicTest: 300 }).join('\n')), name: 'a synthetic FER2013-format CSV of 1,000 rows' };
const gzip = reference.bytes[0] === 0x1f && reference.bytes[1] === 0x8b;
const server = await serve(undefined, {
  files: { '/bench/blank.html': '<!doctype html><title>bench</title>', '/bench/faces.bin': faces, '/bench/labels.bin': labels, '/bench/reference.csv': reference.bytes },
});
const args = { origin: server.url.replace(/\/$/, ''), gzip, replayRows: REPLAY_ROWS, checkRows: CHECK_ROWS, rounds };

const median = (values) => [...values].sort((a, b) => a - b)[(values.length - 1) >> 1];
const cell = (runs) => {
  const m = (key) => median(runs.map((r) => r[key])).toFixed(1);
  const totals = runs.map((r) => r.total);
  const range = runs.length > 1 ? ` (${Math.min(...totals).toFixed(1)}–${Math.max(...totals).toFixed(1)})` : '';
  return `${m('total')}${range} = ${m('features')} + ${m('fitting')} + ${m('other')}`;
};
const rows = [];
try {
  console.log(`${os.cpus().length} cores (${os.cpus()[0].model}), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`${labels.length} captures (${EXPRESSIONS} × ${CAPTURES_PER_EXPRESSION}), the default model, default options; ` +
    `FER2013: ${REPLAY_ROWS} replay + ${CHECK_ROWS} check rows of ${reference.name}`);
  for (const name of browsers) {
    const browser = await workerBrowser(name, `${server.url}bench/blank.html`);
    try {
      for (const [build, pkg] of [['multi-threaded', 'pkg-threads'], ['single-threaded', 'pkg']]) {
        const { threads, runs } = await browser.inWorker(timeCalibrations, { ...args, pkg });
        const row = [browser.version, `${build}, ${threads} thread${threads === 1 ? '' : 's'}`, cell(runs.without), cell(runs.with)];
        console.error(row.join(' | '), `(${runs.without[0].fitted} captures fitted)`);
        rows.push(row);
      }
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}

console.log(`\nFine-tune seconds, median of ${rounds} (min–max) = features + fitting + other (set-up, final scoring, export):`);
const header = ['browser', 'engine', 'without FER2013', 'with FER2013 (+250 +250 rows)'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
for (const r of [header, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
