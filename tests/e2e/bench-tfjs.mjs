// Training speed in the tab, ours against TensorFlow.js on the same architectures (not a test:
// run by hand after ./build.sh wasm, or by ./build.sh bench; about 3 minutes on 2 cores):
//
//   node tests/e2e/bench-tfjs.mjs [--seconds 10] [--rows 640] [--presets seed,deep] [--cpu-deep] [--json]
//
// Serves the repository root (our www/pkg, TF.js from tests/e2e/bench/node_modules) with the
// cross-origin isolation headers, opens tests/e2e/bench/ in Debian's headless Chromium, and for
// each preset trains on the same synthetic FER2013 faces with batch 64, Adam 1e-3 and no
// augmentation, timing `--seconds` of steps after a warm-up:
//   - ours: the CSV through DatasetLoader, then `Training.trainSlice` (wasm, one thread), timed
//     before and after TF.js, as other load on the machine drifts;
//   - TF.js: the preset rebuilt layer for layer as a tf.sequential, one optimizer.minimize per
//     batch, on its wasm backend (default threads, then one thread if that differs) and on its cpu
//     backend (plain JS; `deep` only with --cpu-deep, as one step takes a minute or more).
// TF.js 4.22's wasm backend has no Conv2DBackpropFilter kernel, so it cannot train a conv net:
// the probe names the gradients that fail, and the wasm rows are measured with a stand-in
// kernel built from the backend's own Conv2D (bench/bench.js). The table also gives the wasm
// rows with the stand-in's time removed, the most TF.js could gain from a native kernel.
// Each configuration runs in a fresh page: TF.js fixes its wasm thread count at start-up. TF.js
// caps its wasm threads at hardwareConcurrency / 2: on 2 logical cores it runs one thread.
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, option } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WARMUP_SECONDS = 1;

function options() {
  const args = process.argv.slice(2);
  return {
    seconds: Number(option('seconds', 10)),
    rows: Number(option('rows', 640)),
    presets: option('presets', 'seed,deep').split(','),
    cpuDeep: args.includes('--cpu-deep'),
    json: args.includes('--json'),
  };
}

const OURS = { label: 'ours (fer-cnn wasm)', engine: 'ours' };
const tfjsWasm = (label, threads) => ({ label, engine: 'tfjs', backend: 'wasm', threads, standInFilterGradient: true });
const TFJS_CPU = { label: 'TF.js cpu (plain JS)', engine: 'tfjs', backend: 'cpu' };

/** Opens the bench page in a fresh context and returns `await window[name](args)` there. */
async function inPage(browser, url, name, args) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    page.on('response', (response) => { if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`); });
    await page.goto(`${url}tests/e2e/bench/`);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 60_000 }).catch((error) => {
      throw new Error(`the bench page did not start: ${errors.join('; ') || error.message}`);
    });
    const result = await page.evaluate(([fn, a]) => window[fn](a), [name, args]);
    if (errors.length) result.pageErrors = errors;
    return result;
  } finally {
    await context.close();
  }
}

function printTable(rows) {
  const columns = [
    ['preset', 6], ['engine (* = stand-in Conv2DBackpropFilter)', 42], ['parameters', 10], ['threads', 7], ['images/s', 9], ['steps', 5],
    ['ours ÷ this', 11], ['stand-in share', 14], ['ours ÷ this without stand-in', 28],
  ];
  const line = (cells) => cells.map((cell, i) => (i < 2 ? String(cell).padEnd(columns[i][1]) : String(cell).padStart(columns[i][1]))).join('  ');
  console.log(line(columns.map(([name]) => name)));
  console.log(line(columns.map(([, width]) => '-'.repeat(width))));
  for (const r of rows) {
    const ours = rows.filter((o) => o.preset === r.preset && o.engine === 'ours');
    const oursImagesPerSecond = ours.reduce((sum, o) => sum + o.imagesPerSecond, 0) / ours.length;
    const ratio = (imagesPerSecond) => (r.engine === 'ours' ? '' : `${(oursImagesPerSecond / imagesPerSecond).toFixed(2)}x`);
    const standIn = r.standInMaxRelativeError != null;
    console.log(line([
      r.preset, r.label, r.parameters, r.threads, r.imagesPerSecond.toFixed(1), r.steps, ratio(r.imagesPerSecond),
      standIn ? `${((100 * r.standInSeconds) / r.seconds).toFixed(0)}%` : '',
      standIn ? ratio(r.images / (r.seconds - r.standInSeconds)) : '',
    ]));
  }
}

const opts = options();
const server = await serve(ROOT);
const browser = await launch();
const shutDown = async () => {
  await browser.close();
  await server.close();
};
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => shutDown().finally(() => process.exit(130)));
const loadBefore = os.loadavg()[0];
try {
  console.error('probing the gradients TF.js training needs on its wasm and cpu backends');
  const wasmProbe = await inPage(browser, server.url, 'probe', { backend: 'wasm', threads: 'all', presets: opts.presets });
  const cpuProbe = await inPage(browser, server.url, 'probe', { backend: 'cpu' });

  const rows = [];
  const measure = async (preset, { label, ...args }) => {
    console.error(`${preset}: ${label}`);
    const result = await inPage(browser, server.url, 'bench', {
      ...args, preset, seconds: opts.seconds, warmupSeconds: WARMUP_SECONDS, rows: opts.rows,
    });
    rows.push({ label, ...result });
    return result;
  };
  for (const preset of opts.presets) {
    await measure(preset, OURS);
    const byDefault = await measure(preset, tfjsWasm('TF.js wasm*, default threads', null));
    // TF.js's default is half the logical cores (1 to 8); one thread only when that differs.
    if (byDefault.threads !== 1) await measure(preset, tfjsWasm('TF.js wasm*, setThreadsCount(1)', 1));
    if (preset !== 'deep' || opts.cpuDeep) await measure(preset, TFJS_CPU);
    // Ours again: other load on the machine drifts while the rows run; the ratios use the mean.
    await measure(preset, { ...OURS, label: 'ours again, after TF.js' });
  }

  console.log(`Chromium ${browser.version()}, navigator.hardwareConcurrency ${wasmProbe.hardwareConcurrency}, crossOriginIsolated: ${wasmProbe.crossOriginIsolated}`);
  console.log(`TF.js ${wasmProbe.tfjs}, tfjs-backend-wasm ${wasmProbe.tfjsBackendWasm}; asked for setThreadsCount(${wasmProbe.hardwareConcurrency}), its wasm backend used ${wasmProbe.threads}`);
  console.log('  (it caps threads at hardwareConcurrency / 2, between 1 and 8; by default it takes that cap)');
  console.log(`Every row: ${opts.rows} synthetic 48x48 faces, batch 64, Adam 1e-3, no augmentation; ${opts.seconds} s of steps timed after >= ${WARMUP_SECONDS} s of warm-up.`);
  console.log(`Load average (1 min) before / after: ${loadBefore.toFixed(2)} / ${os.loadavg()[0].toFixed(2)} on ${os.cpus().length} CPUs; rows run one after another,`);
  console.log('  so other load shifts them: ours runs first and last, and "ours ÷ this" uses the mean of the two.');
  console.log('Ours is the single-threaded build here (the page trains on every core: bench-training.mjs); "threads" for TF.js wasm is what tf.wasm.getThreadsCount() reported.');
  if (!rows.some((r) => r.threads > 1)) console.log('TF.js wasm ran on one thread by default, so its setThreadsCount(1) rows would repeat those rows: not run.');
  for (const probe of [wasmProbe, cpuProbe]) {
    const missing = probe.gradients.filter((g) => !g.ok);
    console.log(`TF.js ${probe.backend} gradients: ${missing.length ? `FAIL: ${missing.map((g) => `${g.name} (${g.error})`).join('; ')}` : `all ${probe.gradients.length} present`}`);
    for (const [preset, step] of Object.entries(probe.trainingStep)) {
      console.log(`  TF.js ${probe.backend} as shipped, one training step of ${preset}: ${step.ok ? 'runs' : `fails (${step.error})`}`);
    }
  }
  const standIn = rows.filter((r) => r.standInMaxRelativeError != null);
  if (standIn.length) {
    const worst = Math.max(...standIn.map((r) => r.standInMaxRelativeError));
    console.log(`* stand-in Conv2DBackpropFilter = wasm Conv2D of transposed tensors; largest relative difference from TF.js cpu's kernel: ${worst.toExponential(1)}.`);
    console.log('  "stand-in share" is the part of the timed steps spent in it; the last column removes that time altogether.');
  }
  if (!opts.presets.includes('deep') || !opts.cpuDeep) console.log('TF.js cpu on deep: not run (--cpu-deep runs it; one step takes a minute or more).');
  console.log('');
  printTable(rows);
  for (const r of [wasmProbe, cpuProbe, ...rows].filter((r) => r.pageErrors)) {
    console.log(`page errors (${r.preset ?? `${r.backend} probe`} ${r.label ?? ''}): ${r.pageErrors.join('; ')}`);
  }
  if (opts.json) console.log(JSON.stringify({ probes: [wasmProbe, cpuProbe], rows }, null, 2));
} finally {
  await shutDown();
}
