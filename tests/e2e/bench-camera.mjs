// Figures for the camera (not a test; run by hand or by ./build.sh bench):
//
//   node tests/e2e/bench-camera.mjs [--browser chromium|firefox|both] [--frames 300]
//     [--faces 1|3] [--models default,fast] [--arithmetic int8,f32] [--live on|off] [--www DIR]
//
// In each browser, the page's own wasm packages find, crop and classify the faces of one
// 640x480 frame (the test scene: three FER2013 faces, or with --faces 1 the one it finds best) with
// each model of --models (files in www/models), --frames times after a warm-up, and report the
// median, mean and 90th percentile milliseconds per frame, per stage as the wasm handle times
// them, and the frames/s that leaves. The camera searches the whole frame only every few frames
// and follows the faces it knows in between (src/face/finder.rs), so the mean is the figure
// per frame over time; the find times of the two kinds of frame are also reported apart.
// `--www` serves another copy of www/ (a build kept from before a change, to alternate with).
// Three ways: the single-threaded build on the main thread, and in a worker (as the page's camera runs) the multi-threaded
// build with a pool of one thread and of one thread per core. In Chromium it also runs the
// page with a fake 30 frames/s camera for five seconds and reads the page's own figures (which
// include copying each frame out of the video and handing it to the worker), and counts the
// main thread's long tasks meanwhile. Chromium is
// driven by playwright-core, Firefox ESR by geckodriver's WebDriver HTTP API (playwright
// cannot drive Firefox ESR).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { serve, launch, firefoxSession, option } from './harness.mjs';
import { readScene, enlarge, withOneFace, y4m, SCENE_FACES } from './face-scene.mjs';


/**
 * Runs in the browser, on the main thread or in a worker: times `frames` calls of
 * Camera.processVideoFrame on the given frame, with the wasm package `pkg` and, for the
 * multi-threaded one, a pool of `threads` threads (0: one per core).
 */
async function timeFrames({ origin, pkg, threads, int8, modelName, greyBase64, width, height, frames }) {
  const fer = await import(`${origin}/${pkg}/fer_cnn.js`);
  const { memory } = await fer.default();
  const pool = pkg === 'pkg-threads' ? threads || navigator.hardwareConcurrency : 1;
  if (pkg === 'pkg-threads') await fer.initThreadPool(pool);
  const fetchOk = async (url) => {
    const response = await fetch(`${origin}${url}`);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status} (run ./build.sh wasm)`);
    return response;
  };
  const model = fer.Model.fromBytes(new Uint8Array(await (await fetchOk(`/models/${modelName}.safetensors`)).arrayBuffer()));
  model.setInt8Inference(int8);
  const camera = new fer.Camera(
    await (await fetchOk('/vendor/face-detector/tiny_face_detector_model-weights_manifest.json')).text(),
    new Uint8Array(await (await fetchOk('/vendor/face-detector/tiny_face_detector_model.bin')).arrayBuffer()),
  );
  const grey = Uint8Array.from(atob(greyBase64), (c) => c.charCodeAt(0));
  const address = camera.frameBuffer(width, height);
  const frame = new Uint8Array(memory.buffer, address, width * height * 4);
  grey.forEach((g, i) => frame.set([g, g, g, 255], 4 * i));
  const stages = { total: [], find: [], crop: [], classify: [] };
  // Find times apart for frames searched whole and those searched only around known faces.
  const searches = { wholeFrame: [], windows: [] };
  const { timingFields } = fer.cameraLayout();
  let faces = 0;
  for (let i = 0; i < frames + 20; i++) {
    const started = performance.now();
    faces = camera.processVideoFrame(model);
    const total = performance.now() - started;
    const [find, crop, classify, wholeFrame] = new Float32Array(memory.buffer, camera.timings(), timingFields);
    if (i < 20) continue; // warm-up: the JIT tiers up, buffers reach their size
    Object.entries({ total, find, crop, classify }).forEach(([stage, ms]) => stages[stage].push(ms));
    searches[wholeFrame === 1 ? 'wholeFrame' : 'windows'].push(find);
  }
  const quantile = (values, q) => [...values].sort((a, b) => a - b)[Math.floor(q * (values.length - 1))];
  const mean = (values) => values.reduce((sum, v) => sum + v, 0) / values.length;
  const summary = (values) => ({ median: quantile(values, 0.5), mean: mean(values), p90: quantile(values, 0.9) });
  return {
    faces,
    pool,
    ms: Object.fromEntries(Object.entries(stages).map(([stage, values]) => [stage, summary(values)])),
    searches: Object.fromEntries(Object.entries(searches).map(([search, values]) => [search, { frames: values.length, ...(values.length ? summary(values) : {}) }])),
    userAgent: navigator.userAgent,
    timerResolutionMs: (() => { const t = performance.now(); let u; while ((u = performance.now()) === t); return u - t; })(),
  };
}

/**
 * Runs in the browser: `timeFrames` in a module worker made from its source, which is how the
 * page's camera runs (the multi-threaded build needs a thread that may block).
 */
function timeFramesInWorker({ source, args }) {
  const code = `(${source})(${JSON.stringify(args)}).then((figures) => postMessage(figures), (error) => postMessage({ error: String(error) }));`;
  const worker = new Worker(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })), { type: 'module' });
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      worker.terminate();
      resolve(data);
    };
    worker.onerror = (event) => reject(new Error(event.message ?? 'the benchmark worker did not start'));
  });
}

/**
 * The three ways to run the camera, for each model and each arithmetic of --arithmetic (the
 * page uses integer arithmetic for int8 models such as the default one), as `timeFrames`
 * arguments with a name.
 */
function variants(args) {
  const ways = [
    ['main thread, single-threaded build', { ...args, pkg: 'pkg', threads: 1 }, false],
    // A pool of one thread, then one per core.
    ['worker, multi-threaded build', { ...args, pkg: 'pkg-threads', threads: 1 }, true],
    ['worker, multi-threaded build', { ...args, pkg: 'pkg-threads', threads: 0 }, true],
  ];
  const arithmetics = option('arithmetic', 'f32,int8').split(',');
  return option('models', 'default').split(',').flatMap((modelName) => ways.flatMap(([name, variant, inWorker]) =>
    arithmetics.map((arithmetic) => [`${name}, model ${modelName}, ${arithmetic} arithmetic`, { ...variant, modelName, int8: arithmetic === 'int8' }, inWorker])));
}

function report(browser, figures) {
  if (figures.error) throw new Error(`${browser}: ${figures.error}`);
  const { ms } = figures;
  const fmt = ({ median, mean, p90 }) => `${median.toFixed(2)} (mean ${mean.toFixed(2)}, p90 ${p90.toFixed(2)})`;
  console.log(`${browser}, ${figures.pool} thread${figures.pool === 1 ? '' : 's'}: ${figures.faces} face${figures.faces === 1 ? '' : 's'} in a 640x480 frame; ms per frame, median (mean, 90th percentile): ` +
    `find ${fmt(ms.find)} + crop ${fmt(ms.crop)} + classify ${fmt(ms.classify)} = ${fmt(ms.total)} ` +
    `→ ${(1000 / ms.total.mean).toFixed(0)} frames/s from wasm alone [${figures.userAgent}; timer step ${figures.timerResolutionMs.toFixed(3)} ms]`);
  const searched = ({ frames, median }, what) => `${what} in ${frames} frame${frames === 1 ? '' : 's'}${frames ? `, median ${median.toFixed(2)} ms` : ''}`;
  console.log(`  find: ${searched(figures.searches.wholeFrame, 'whole frame')}; ${searched(figures.searches.windows, 'around known faces only')}`);
}

async function benchChromium(url, args) {
  const browser = await launch();
  try {
    for (const [name, variant, inWorker] of variants(args)) {
      const page = await browser.newPage();
      await page.goto(url);
      const figures = inWorker
        ? await page.evaluate(timeFramesInWorker, { source: timeFrames.toString(), args: variant })
        : await page.evaluate(timeFrames, variant);
      report(`Chromium ${name}`, figures);
      await page.close();
    }
  } finally {
    await browser.close();
  }
}

/** The live page with a fake camera: the page's own figures after five seconds. */
async function liveChromium(url, scene) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-camera-bench-'));
  const video = path.join(dir, 'faces.y4m');
  await fs.writeFile(video, y4m(scene));
  const browser = await launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`]);
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForSelector('#camera[data-state="off"]', { timeout: 30_000 });
    await page.click('#camera-start');
    await page.waitForSelector('#camera[data-state="on"]');
    await page.waitForTimeout(1000);
    // Tasks of over 50 ms on the page's main thread (the browser's "long tasks"): each one is a
    // moment the page cannot respond.
    await page.evaluate(() => {
      window.longTasks = [];
      new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => e.duration))).observe({ type: 'longtask' });
    });
    await page.waitForTimeout(5000);
    const longTasks = await page.evaluate(() => window.longTasks);
    console.log(`Chromium, live page with a fake 30 frames/s camera: ${await page.textContent('#camera-stats')}; ` +
      `main-thread tasks over 50 ms in 5 s: ${longTasks.length}${longTasks.length ? ` (longest ${Math.max(...longTasks).toFixed(0)} ms)` : ''}`);
  } finally {
    await browser.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function benchFirefox(url, args) {
  const { call, session, close } = await firefoxSession(url);
  try {
    await call('POST', `${session}/timeouts`, { script: 600_000 });
    for (const [name, variant, inWorker] of variants(args)) {
      await call('POST', `${session}/url`, { url });
      const script = `const done = arguments[arguments.length - 1];
        const timeFrames = ${timeFrames.toString()};
        (${inWorker ? `(${timeFramesInWorker.toString()})({ source: timeFrames.toString(), args: arguments[0] })` : 'timeFrames(arguments[0])'})
          .then(done, (error) => done({ error: String(error) }));`;
      report(`Firefox ${name}`, await call('POST', `${session}/execute/async`, { script, args: [variant] }));
    }
  } finally {
    await close();
  }
}

const browsers = option('browser', 'both') === 'both' ? ['chromium', 'firefox'] : [option('browser')];
const faces = option('faces', String(SCENE_FACES));
if (faces !== '1' && faces !== String(SCENE_FACES)) throw new Error(`--faces takes 1 or ${SCENE_FACES}, got ${faces}`);
const scene = enlarge(faces === '1' ? withOneFace(await readScene()) : await readScene(), 2);
const args = { greyBase64: scene.grey.toString('base64'), width: scene.width, height: scene.height, frames: Number(option('frames', 300)) };
const server = option('www') ? await serve(option('www')) : await serve();
args.origin = server.url.replace(/\/$/, '');
try {
  console.log(`${os.cpus().length} cores (${os.cpus()[0].model}), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  if (browsers.includes('chromium')) {
    await benchChromium(server.url, args);
    if (option('live', 'on') === 'on') await liveChromium(server.url, scene);
  }
  if (browsers.includes('firefox')) await benchFirefox(server.url, args);
} finally {
  await server.close();
}
