// Figures for the training half of the page, measured in real browsers with the real file (not
// a test: run by hand, it needs ../shared and several minutes):
//
//   node tests/e2e/bench-training.mjs [--browser chromium|firefox|both] [--csv FILE]
//        [--seed-epochs 30] [--limit 6000] [--timed deep,fast] [--deep-seconds 120] [--threads on|off]
//   node tests/e2e/bench-training.mjs --curve fast [--browser chromium] [--csv FILE]
//
// For each browser: drop the CSV on the page (file picker), read the load time the page reports
// and the peak resident memory of the browser's processes while loading; train `seed` on the
// first --limit Training rows with the CLI's settings (Adam 1e-3, batch 64, seed 1) and read the
// PublicTest accuracy and images/s; train each --timed preset (`deep` by default) with its
// suggested settings (on --limit rows) for --deep-seconds,
// read its images/s, stop. In Chromium it also counts main-thread tasks over 50 ms while training.
// The page is served cross-origin isolated, so training uses every core (the multi-threaded
// build); `--threads off` serves it without isolation, as a plain static host would: one thread.
// Chromium is driven by playwright-core, Firefox ESR by geckodriver's WebDriver HTTP API
// (playwright cannot drive Firefox ESR). Memory comes from /proc (Linux only).
//
// `--curve PRESET` instead trains PRESET with the recipe the form suggests for it, left as it is
// (every Training face unless the recipe limits them), to the end, and prints the curve: the
// PublicTest accuracy after each epoch against the minutes since Start was clicked.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, firefoxSession, option } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function options() {
  return {
    browsers: option('browser', 'both') === 'both' ? ['chromium', 'firefox'] : [option('browser')],
    csv: path.resolve(option('csv', path.join(ROOT, '../shared/fer2013/fer2013-train-publictest.csv.gz'))),
    seedEpochs: Number(option('seed-epochs', 30)),
    limit: Number(option('limit', 6000)),
    deepSeconds: Number(option('deep-seconds', 120)),
    timed: option('timed', 'deep').split(','),
    isolated: option('threads', 'on') !== 'off',
    curve: option('curve', null),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resident memory (bytes) of every process below `isRoot`'s match, sampled from /proc. */
async function processTree(isRoot) {
  const processes = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const [stat, status, cmdline] = await Promise.all([
        fs.readFile(`/proc/${pid}/stat`, 'utf8'), fs.readFile(`/proc/${pid}/status`, 'utf8'), fs.readFile(`/proc/${pid}/cmdline`, 'utf8'),
      ]);
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
      processes.push({ pid: Number(pid), ppid, rss, cmdline: cmdline.replaceAll('\0', ' ') });
    } catch {
      // The process ended while we read it.
    }
  }
  const inTree = new Set(processes.filter((p) => isRoot(p)).map((p) => p.pid));
  for (let grew = true; grew;) {
    grew = false;
    for (const p of processes) {
      if (!inTree.has(p.pid) && inTree.has(p.ppid)) {
        inTree.add(p.pid);
        grew = true;
      }
    }
  }
  return processes.filter((p) => inTree.has(p.pid));
}

/** Samples the tree's memory every 250 ms until stopped; resolves to the peaks. */
function memorySampler(isRoot) {
  let running = true;
  const peak = { total: 0, largest: 0 };
  const done = (async () => {
    while (running) {
      const tree = await processTree(isRoot);
      peak.total = Math.max(peak.total, tree.reduce((sum, p) => sum + p.rss, 0));
      peak.largest = Math.max(peak.largest, ...tree.map((p) => p.rss));
      await sleep(250);
    }
    return peak;
  })();
  return { stop: () => { running = false; return done; } };
}

// The page's state, read the same way in both browsers.
const READ_STATE = `(() => {
  const train = document.querySelector('#train');
  const totals = document.querySelector('#load-totals');
  return {
    ready: document.body.dataset.ready === 'true',
    loaded: !document.querySelector('#load-summary').hidden,
    loadError: document.querySelector('#load-error').hidden ? null : document.querySelector('#load-error').textContent,
    trainError: document.querySelector('#train-error').hidden ? null : document.querySelector('#train-error').textContent,
    loadSeconds: Number(totals.dataset.seconds), faces: Number(totals.dataset.faces), wasmMemoryBytes: Number(totals.dataset.wasmMemoryBytes),
    trainState: train.dataset.state, epoch: Number(train.dataset.epoch ?? 0), epochsDone: Number(train.dataset.epochsDone ?? 0), threads: Number(train.dataset.threads ?? 0),
    imagesPerSecond: Number(train.dataset.imagesPerSecond ?? 0),
    averageImagesPerSecond: Number(train.dataset.averageImagesPerSecond ?? 0),
    publicTestAccuracy: Number(train.dataset.publictestAccuracy ?? NaN),
    longTasks: window.benchLongTasks ?? null,
  };
})()`;

const startTraining = (preset, settings) => `(() => {
  const form = document.querySelector('#train-form');
  form.elements.preset.value = ${JSON.stringify(preset)};
  form.elements.preset.dispatchEvent(new Event('change'));
  for (const [name, value] of Object.entries(${JSON.stringify(settings)})) form.elements.namedItem(name).value = value;
  window.benchLongTasks = window.benchObservesLongTasks ? { count: 0, maxMs: 0 } : null;
  document.querySelector('#train-start').click();
})()`;

const CLICK_STOP = `document.querySelector('#train-stop').click()`;

// Main-thread tasks over 50 ms (Chromium's Long Tasks API), counted while training.
const OBSERVE_LONG_TASKS = `window.benchObservesLongTasks = true;
new PerformanceObserver((list) => {
  if (!window.benchLongTasks) return;
  for (const entry of list.getEntries()) {
    window.benchLongTasks.count += 1;
    window.benchLongTasks.maxMs = Math.max(window.benchLongTasks.maxMs, entry.duration);
  }
}).observe({ type: 'longtask' });`;

async function waitFor(read, done, { timeoutMs, what }) {
  const started = Date.now();
  for (;;) {
    const state = await read();
    if (state.loadError || state.trainError) throw new Error(state.loadError ?? state.trainError);
    if (done(state)) return state;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

async function chromiumDriver(url) {
  const marker = `--fer-bench=${process.pid}`;
  const browser = await launch([marker]);
  const page = await browser.newPage();
  await page.addInitScript(OBSERVE_LONG_TASKS);
  await page.goto(url);
  return {
    isRoot: (p) => p.cmdline.includes(marker) && !p.cmdline.includes('--type='),
    evaluate: (expression) => page.evaluate(expression),
    setFile: (selector, file) => page.setInputFiles(selector, file),
    close: () => browser.close(),
  };
}

/** Firefox through geckodriver: the few WebDriver calls this script needs. */
async function firefoxDriver(url) {
  const { call, session, driverPid, close } = await firefoxSession(url);
  return {
    isRoot: (p) => p.ppid === driverPid,
    evaluate: (expression) => call('POST', `${session}/execute/sync`, { script: `return ${expression};`, args: [] }),
    async setFile(selector, file) {
      const element = await call('POST', `${session}/element`, { using: 'css selector', value: selector });
      await call('POST', `${session}/element/${Object.values(element)[0]}/value`, { text: file });
    },
    close,
  };
}

async function bench(browserName, url, opts) {
  const driver = await (browserName === 'firefox' ? firefoxDriver : chromiumDriver)(url);
  const read = () => driver.evaluate(READ_STATE);
  const figures = { browser: browserName };
  try {
    await waitFor(read, (s) => s.ready, { timeoutMs: 60_000, what: 'the page' });

    const before = await processTree(driver.isRoot);
    const memory = memorySampler(driver.isRoot);
    const started = Date.now();
    await driver.setFile('#data-file', opts.csv);
    const loaded = await waitFor(read, (s) => s.loaded, { timeoutMs: 600_000, what: 'the CSV to load' });
    const peak = await memory.stop();
    Object.assign(figures, {
      faces: loaded.faces,
      loadSecondsInPage: loaded.loadSeconds,
      loadSecondsWallClock: (Date.now() - started) / 1000,
      wasmMemoryMB: loaded.wasmMemoryBytes / 1e6,
      rssMBBeforeAllProcesses: before.reduce((sum, p) => sum + p.rss, 0) / 1e6,
      rssMBBeforeLargestProcess: Math.max(...before.map((p) => p.rss)) / 1e6,
      peakRssMBAllProcesses: peak.total / 1e6,
      peakRssMBLargestProcess: peak.largest / 1e6,
    });
    console.error(`${browserName}: loaded`, figures);
    if (opts.curve) return { ...figures, ...(await trainingCurve(driver, read, opts.curve)) };

    await driver.evaluate(startTraining('seed', {
      limit: opts.limit, epochs: opts.seedEpochs, batch_size: 64, lr: 0.001, optimizer: 'adam', seed: 1,
    }));
    const seed = await waitFor(read, (s) => s.trainState === 'finished', { timeoutMs: 3_600_000, what: 'seed training' });
    Object.assign(figures, {
      threads: seed.threads,
      seedPublicTestAccuracy: seed.publicTestAccuracy,
      seedImagesPerSecond: seed.averageImagesPerSecond,
      seedLongTasksOver50ms: seed.longTasks,
    });
    console.error(`${browserName}: seed trained`, figures);

    for (const preset of opts.timed) {
      await driver.evaluate(startTraining(preset, { limit: opts.limit }));
      await waitFor(read, (s) => s.trainState === 'running' && s.imagesPerSecond > 0, { timeoutMs: 120_000, what: `${preset} training to start` });
      await sleep(opts.deepSeconds * 1000);
      const running = await read();
      await driver.evaluate(CLICK_STOP);
      const stopped = await waitFor(read, (s) => s.trainState === 'finished', { timeoutMs: 600_000, what: `${preset} training to stop` });
      Object.assign(figures, {
        [`${preset}ImagesPerSecondRecent`]: running.imagesPerSecond,
        [`${preset}ImagesPerSecond`]: stopped.averageImagesPerSecond,
        [`${preset}LongTasksOver50ms`]: stopped.longTasks,
      });
    }
    return figures;
  } finally {
    await driver.close();
  }
}

/** Trains `preset` with its suggested recipe to the end; the PublicTest accuracy after each epoch. */
async function trainingCurve(driver, read, preset) {
  await driver.evaluate(startTraining(preset, {}));
  const started = Date.now();
  const curve = [];
  for (;;) {
    const state = await waitFor(read, (s) => s.trainState === 'finished' || (s.epochsDone ?? 0) > curve.length, {
      timeoutMs: 3_600_000, what: `${preset}'s next epoch`,
    });
    if (state.epochsDone > curve.length) {
      const point = { minutes: Number(((Date.now() - started) / 60_000).toFixed(2)), epoch: state.epochsDone, publicTestAccuracy: state.publicTestAccuracy };
      curve.push(point);
      console.error(`${preset}:`, point);
    }
    if (state.trainState === 'finished') {
      return { preset, threads: state.threads, imagesPerSecond: state.averageImagesPerSecond, curve };
    }
  }
}

const opts = options();
await fs.access(opts.csv).catch(() => { throw new Error(`${opts.csv} is missing: pass --csv FILE (fer2013.csv or .csv.gz)`); });
const server = await serve(undefined, { isolated: opts.isolated });
try {
  for (const browserName of opts.browsers) {
    console.log(JSON.stringify(await bench(browserName, server.url, opts), null, 2));
  }
} finally {
  await server.close();
}
