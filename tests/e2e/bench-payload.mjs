// What the page costs to start: the bytes sent from the navigation until the camera's first
// prediction (a fake camera filming tests/fixtures/face_scene.pgm, started the moment its button
// is enabled), compressed as a static host sends them (brotli, gzip) and not, and the time to
// that first prediction (its first frame classified) and to its first face on show.
//
//   node bench-payload.mjs [--roots DIR,DIR…] [--runs N] [--models default,fast] [--fast FILE]
//
// --roots: www/ folders to compare, e.g. a copy of www/ from before a change and www/ itself
// (default: www/ alone); each round loads every root in turn, so their times are alternated.
// --models: the size of the model the camera starts with: every models/*.safetensors the page
// asks for is answered with the default model's bytes, or with the `fast` model's (--fast,
// default www/models/fast.safetensors). Each load is a fresh browser context (empty cache); a
// first, unreported round fills the server's compression cache.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { serve, launch, option, WWW } from './harness.mjs';
import { readScene, enlarge, y4m } from './face-scene.mjs';

const roots = option('roots', WWW).split(',').map((root) => path.resolve(root));
const runs = Number(option('runs', '3'));
const modelNames = option('models', 'default,fast').split(',');
const modelFiles = { default: path.join(WWW, 'models/default.safetensors'), fast: option('fast', path.join(WWW, 'models/fast.safetensors')) };
const ENCODINGS = { br: ['br', 'gzip'], gzip: ['gzip'], none: [] };

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const kB = (bytes) => `${(bytes / 1000).toFixed(0)} kB`;

/** `{ '/models/x.safetensors': bytes }` for every model file under `root` (and fast's path), all `bytes`. */
async function modelOverrides(root, bytes) {
  const names = new Set(['fast.safetensors', ...(await fs.readdir(path.join(root, 'models'))).filter((name) => name.endsWith('.safetensors'))]);
  return Object.fromEntries([...names].map((name) => [`/models/${name}`, bytes]));
}

// In the page from its first script: the button is pressed as soon as it is enabled, and the
// first frame classified and first face shown are timed (ms since the navigation started).
function markFirstPrediction() {
  const marks = {};
  const observer = new MutationObserver(() => {
    const camera = document.querySelector('#camera');
    const start = document.querySelector('#camera-start');
    if (start && !start.disabled && !marks.clicked) {
      marks.clicked = performance.now();
      start.click();
    }
    if (camera && Number(camera.dataset.frames ?? 0) >= 1 && !marks.firstFrame) {
      marks.firstFrame = performance.now();
      window.benchMark('firstFrame', marks.firstFrame);
    }
    if (camera && Number(camera.dataset.faces ?? 0) >= 1 && !marks.firstFace) {
      marks.firstFace = performance.now();
      window.benchMark('firstFace', marks.firstFace);
    }
  });
  observer.observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['disabled', 'data-frames', 'data-faces'] });
}

/** One page load of `root`: the responses sent until the first prediction, and its timings. */
async function loadOnce(browser, root, modelBytes, encodings) {
  const responses = [];
  const server = await serve(root, { encodings, files: await modelOverrides(root, modelBytes), onResponse: (r) => responses.push(r) });
  const context = await browser.newContext();
  try {
    const marks = {};
    let firstFrameSeen;
    const seen = new Promise((resolve) => { firstFrameSeen = resolve; });
    await context.exposeBinding('benchMark', (_, name, ms) => {
      marks[name] = { ms, at: performance.now() };
      if (name === 'firstFace') firstFrameSeen();
    });
    await context.addInitScript(markFirstPrediction);
    const page = await context.newPage();
    await page.goto(server.url);
    await Promise.race([seen, new Promise((_, reject) => setTimeout(() => reject(new Error(`no face shown within 60 s (${root})`)), 60_000))]);
    const before = responses.filter((r) => r.at <= marks.firstFrame.at);
    const fetches = {};
    const sentByPath = {};
    for (const r of before) {
      fetches[r.path] = (fetches[r.path] ?? 0) + 1;
      sentByPath[r.path] = `${sentByPath[r.path] ? `${sentByPath[r.path]} + ` : ''}${r.status} ${r.sentBytes}`;
    }
    return {
      sent: before.reduce((sum, r) => sum + r.sentBytes, 0),
      raw: before.reduce((sum, r) => sum + r.rawBytes, 0),
      requests: before.length,
      fetches,
      sentByPath,
      firstFrameMs: marks.firstFrame.ms,
      firstFaceMs: marks.firstFace.ms,
    };
  } finally {
    await context.close();
    await server.close();
  }
}

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-payload-'));
const video = path.join(dir, 'faces.y4m');
await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
const browser = await launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`]);
try {
  console.log(`Chromium ${browser.version()}, ${os.cpus().length} cores; medians of ${runs} loads; bytes sent (headers included) until the first frame is classified`);
  for (const modelName of modelNames) {
    const modelBytes = await fs.readFile(modelFiles[modelName]);
    for (const [encodingName, encodings] of Object.entries(ENCODINGS)) {
      const results = roots.map(() => []);
      for (let round = -1; round < runs; round++) {
        for (const [i, root] of roots.entries()) {
          const result = await loadOnce(browser, root, modelBytes, encodings);
          if (round >= 0) results[i].push(result);
        }
      }
      for (const [i, root] of roots.entries()) {
        const loads = results[i];
        const last = loads.at(-1);
        const repeated = Object.entries(last.fetches).filter(([file, n]) => n > 1 && /\.(wasm|safetensors)$/.test(file)).map(([file, n]) => `${path.basename(path.dirname(file))}/${path.basename(file)} ×${n}`);
        console.log(`${root} · camera model ${modelName} (${kB(modelBytes.length)}) · ${encodingName}: ` +
          `${kB(median(loads.map((l) => l.sent)))} sent (${kB(median(loads.map((l) => l.raw)))} uncompressed, ${last.requests} requests), ` +
          `first frame ${median(loads.map((l) => l.firstFrameMs)).toFixed(0)} ms, first face ${median(loads.map((l) => l.firstFaceMs)).toFixed(0)} ms` +
          (repeated.length ? `; fetched more than once: ${repeated.join(', ')}` : ''));
        if (process.env.BENCH_VERBOSE) console.log(last.sentByPath);
      }
    }
  }
} finally {
  await browser.close();
  await fs.rm(dir, { recursive: true, force: true });
}
