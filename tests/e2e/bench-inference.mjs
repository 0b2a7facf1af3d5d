// Classifying speed in the tab, ours against TensorFlow.js (wasm, XNNPACK) and onnxruntime-web
// on the same models, one thread each (not a test: run by hand after ./build.sh wasm, or by
// ./build.sh bench; about 3 minutes per browser on 2 cores):
//
//   node tests/e2e/bench-inference.mjs [--browser chromium|firefox|both] [--seconds 8]
//     [--models seed,deep,default] [--batches 1,128] [--pkg DIR] [--baseline DIR]
//
// Serves the repository root and opens tests/e2e/bench/ (bench/inference.js) in Debian's
// headless Chromium (playwright-core) and Firefox ESR (geckodriver). For each model (a preset
// with seed-1 weights, or `default`: www/models/default.safetensors, the merged `deep-x2`) and
// batch size, on the same synthetic faces, the engines take turns call by call for `--seconds`:
// ours (www/pkg, single-threaded) in f32 and in integer arithmetic, TF.js 4.22's wasm backend
// with setThreadsCount(1) on the model rebuilt layer for layer with our weights, and
// onnxruntime-web (wasm, one thread) on our ONNX export. `--pkg DIR` takes ours from DIR instead
// of www/pkg; `--baseline DIR` also times ours from DIR (a copy of an older www/pkg) in the same
// turns. Prints median faces/s, the ratios of ours
// to TF.js, and how far each engine's probabilities are from ours in f32 (the twins share the
// weights, so a large difference means a twin is wrong, and its figures mean nothing).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, firefoxSession, option } from './harness.mjs';
import { syntheticFaces, onnxRuntimeVersion } from './onnx-web.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PAGE = 'tests/e2e/bench/';
const PKG_URL = '/candidate-pkg';
const BASELINE_URL = '/baseline-pkg';
// Probabilities of twins with the same weights agree to float rounding; int8 is further off.
const SAME_MODEL_TOLERANCE = 1e-3;

const browsers = option('browser', 'both') === 'both' ? ['chromium', 'firefox'] : [option('browser')];
const batches = option('batches', '1,128').split(',').map(Number);
const args = {
  models: option('models', 'seed,deep,default').split(','),
  batches,
  seconds: Number(option('seconds', 8)),
  faces: Array.from(syntheticFaces(Math.max(...batches))),
};
const pkgDir = option('pkg', null);
const baselineDir = option('baseline', null);
const packages = { pkg: pkgDir ? PKG_URL : '/www/pkg', baseline: baselineDir && BASELINE_URL };

/** A package folder's two files, served at `url`. */
async function packageFiles(dir, url) {
  const files = {};
  for (const name of ['fer_cnn.js', 'fer_cnn_bg.wasm']) files[`${url}/${name}`] = await fs.readFile(path.join(dir, name));
  return files;
}

async function inChromium(url) {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    await page.goto(url);
    await page.waitForFunction(() => window.inferenceBenchReady === true, null, { timeout: 60_000 });
    const result = await page.evaluate((a) => window.inferenceBench(a), { ...args, ...packages });
    return { browser: `Chromium ${browser.version()}`, ...result, errors };
  } finally {
    await browser.close();
  }
}

async function inFirefox(url) {
  const { call, session, capabilities, close } = await firefoxSession(url);
  try {
    await call('POST', `${session}/timeouts`, { script: 1_800_000 });
    const script = `const done = arguments[arguments.length - 1];
      const start = () => window.inferenceBenchReady ? window.inferenceBench(arguments[0]).then(done, (error) => done({ error: String(error) })) : setTimeout(start, 100);
      start();`;
    const result = await call('POST', `${session}/execute/async`, { script, args: [{ ...args, ...packages }] });
    if (result.error) throw new Error(`Firefox: ${result.error}`);
    return { browser: `Firefox ${capabilities.browserVersion}`, ...result, errors: [] };
  } finally {
    await close();
  }
}

function report(result) {
  const facesPerSecond = (row, engine) => (row.ms[engine] == null ? null : (1000 * row.n) / row.ms[engine]);
  console.log(`\n${result.browser}, headless; TF.js ${result.tfjs} wasm (threads: ${result.tfjsThreads}); onnxruntime-web ${ortVersion} (wasm, 1 thread); ours: ${pkgDir ?? 'www/pkg'} (wasm simd128, 1 thread)${baselineDir ? `; before: ${baselineDir}` : ''}`);
  const columns = [
    ['model', 18], ['batch', 5], ['ours f32', 9], ['ours int8', 9], ['TF.js', 9], ['ort-web', 9],
    ['f32 ÷ TF.js', 11], ['int8 ÷ TF.js', 12], ['f32 ÷ ort', 9],
    ...(baselineDir ? [['before f32', 10], ['before int8', 11]] : []), ['|Δp| TF.js, ort, int8', 24],
  ];
  const line = (cells) => cells.map((cell, i) => (i === 0 ? String(cell).padEnd(columns[i][1]) : String(cell).padStart(columns[i][1]))).join('  ');
  console.log('faces/s (median of calls taken in turn); ratios of faces/s; |Δp|: largest difference of probabilities from ours in f32');
  console.log(line(columns.map(([name]) => name)));
  for (const row of result.rows) {
    const rate = (engine) => facesPerSecond(row, engine);
    const figure = (engine) => Math.round(rate(engine)).toLocaleString('en');
    const ratio = (a, b) => `${(rate(a) / rate(b)).toFixed(2)}x`;
    const d = row.differences;
    console.log(line([
      `${row.model} (${row.spec})`.slice(0, 18), row.n, figure('ours'), figure('oursInt8'), figure('tfjs'), figure('ort'),
      ratio('ours', 'tfjs'), ratio('oursInt8', 'tfjs'), ratio('ours', 'ort'),
      ...(baselineDir ? [figure('baseline'), figure('baselineInt8')] : []),
      [d.tfjs, d.ort, d.oursInt8].map((v) => v.toExponential(0)).join(', '),
    ]));
  }
  const wrong = result.rows.filter((row) => row.differences.tfjs > SAME_MODEL_TOLERANCE || row.differences.ort > SAME_MODEL_TOLERANCE);
  if (wrong.length) console.log(`WARNING: a twin's probabilities differ from ours by more than ${SAME_MODEL_TOLERANCE}: ${wrong.map((r) => `${r.model} batch ${r.n}`).join(', ')}`);
  if (result.tensorsLeft) console.log(`TF.js tensors left after the run: ${result.tensorsLeft}`);
  if (result.errors.length) console.log(`page errors: ${result.errors.join('; ')}`);
}

const ortVersion = await onnxRuntimeVersion();
const files = {
  ...(pkgDir ? await packageFiles(pkgDir, PKG_URL) : {}),
  ...(baselineDir ? await packageFiles(baselineDir, BASELINE_URL) : {}),
};
const server = await serve(ROOT, { files });
const loadBefore = os.loadavg()[0];
try {
  console.log(`${args.models.join(', ')} at batch ${batches.join(' and ')}, ${args.seconds} s each; synthetic faces; ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'})`);
  for (const name of browsers) {
    console.error(`${name}: running`);
    report(name === 'chromium' ? await inChromium(`${server.url}${PAGE}`) : await inFirefox(`${server.url}${PAGE}`));
  }
  console.log(`\nLoad average (1 min) before / after: ${loadBefore.toFixed(2)} / ${os.loadavg()[0].toFixed(2)}`);
} finally {
  await server.close();
}
