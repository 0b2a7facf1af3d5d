// Memory over a long camera run (not a test; run by hand or by ./build.sh bench):
//
//   node tests/e2e/bench-soak.mjs [--seconds 300]
//
// Headless Chromium opens the page with a fake camera filming the test scene (three FER2013
// faces) and runs the camera for --seconds after a warm-up, printing at the start, the middle
// and the end: frames shown, the page's memory as performance.measureUserAgentSpecificMemory
// reports it (the page and each worker, after a garbage collection), and the camera worker's
// wasm memory. memory.test.mjs runs the short version of this with tolerances; Chromium only,
// as no other browser has the measurement.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { withBrowser, openPage, measureMemory, wasmMemoryBytes, pageWorker, option, CAMERA_WORKER } from './harness.mjs';
import { readScene, enlarge, y4m } from './face-scene.mjs';

const seconds = Number(option('seconds', 300));
if (!(seconds > 0)) throw new Error(`--seconds wants a number of seconds, not ${option('seconds')}`);
const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-soak-'));
const video = path.join(dir, 'faces.y4m');
await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
try {
  console.log(`${os.cpus().length} cores (${os.cpus()[0].model}), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const flags = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`, '--js-flags=--expose-gc'];
  await withBrowser(flags, async ({ server, browser }) => {
    const { page, errors } = await openPage(browser, server.url);
    const cameraWorker = await pageWorker(page, CAMERA_WORKER);
    const frames = () => page.$eval('#camera', (section) => Number(section.dataset.frames ?? 0));
    await page.click('#camera-start');
    await page.waitForSelector('#camera[data-state="on"][data-faces]', { timeout: 30_000 });
    await page.waitForFunction(() => Number(document.querySelector('#camera').dataset.frames ?? 0) >= 50, null, { timeout: 120_000 });

    // Each measurement takes about a minute to come back (see measureMemory) but describes the
    // moment it was asked for, so they are asked for on time and awaited at the end.
    const started = performance.now();
    const snapshots = [];
    const snapshot = async (label) => {
      await cameraWorker.evaluate(() => globalThis.gc?.());
      snapshots.push({ label, at: (performance.now() - started) / 1000, frames: await frames(), wasm: await wasmMemoryBytes(cameraWorker), heaps: measureMemory(page) });
    };
    await snapshot('start');
    await page.waitForTimeout((seconds / 2) * 1000);
    await snapshot('middle');
    await page.waitForTimeout((seconds / 2) * 1000);
    await snapshot('end');
    const first = snapshots[0];
    for (const { label, at, frames: shown, wasm, heaps } of snapshots) {
      const { bytes, by } = await heaps;
      const rate = label === 'start' ? '' : ` (${((shown - first.frames) / at).toFixed(1)} frames/s)`;
      console.log(`Chromium camera soak, ${label} (${at.toFixed(0)} s, ${shown - first.frames} frames${rate}): page and workers ${mb(bytes)} ` +
        `(${Object.entries(by).map(([where, b]) => `${where} ${mb(b)}`).join(', ')}); camera worker's wasm memory ${mb(wasm)}`);
    }
    const [, , last] = snapshots;
    console.log(`over ${seconds} s: page and workers ${mb((await last.heaps).bytes - (await first.heaps).bytes)} more, camera worker's wasm memory ${mb(last.wasm - first.wasm)} more; ` +
      `now ${await page.textContent('#camera-stats')}`);
    if (errors.length) throw new Error(`console errors: ${errors.join('\n')}`);
  });
} finally {
  await fs.rm(dir, { recursive: true, force: true });
}
