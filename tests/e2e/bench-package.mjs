// Figures for the fer-cnn package as an app meets it (not a test; run by hand or by
// ./build.sh bench, after ./build.sh package):
//
//   node tests/e2e/bench-package.mjs [--browser chromium|firefox|both] [--frames 200] [--calls 20]
//
// The tarball is installed into a plain static app (package-app/); in each browser it reports
// the bytes fetched before the first `detect` result (fast model, as a static host compresses
// them) and the time from `load` to that result; `detect` on the 512x512 photo, ms per call;
// and `track` on a 640x480 camera (the photo drawn on a canvas, captured at 30 frames/s), ms
// per frame from taking the frame to the callback, on one thread (no cross-origin isolation)
// and on every core (isolated).
import fs from 'node:fs/promises';
import os from 'node:os';
import { option, serve } from './harness.mjs';
import { inChromium, inFirefox, staticAppWith, tarball } from './package-app.mjs';

const browsers = { chromium: inChromium, firefox: inFirefox };
const chosen = option('browser', 'both');
const frames = Number(option('frames', '200'));
const calls = Number(option('calls', '20'));

const mean = (values) => values.reduce((sum, v) => sum + v, 0) / values.length;
const quantile = (values, q) => [...values].sort((a, b) => a - b)[Math.floor(q * (values.length - 1))];
const summary = (values) => `mean ${mean(values).toFixed(2)}, median ${quantile(values, 0.5).toFixed(2)}, p90 ${quantile(values, 0.9).toFixed(2)} ms`;

/** Each stage's mean over `stages` (after the first 20 frames), and what the rest of a frame's time went to. */
function stageMeans(stages) {
  const kept = stages.slice(20);
  const means = Object.fromEntries(['copyMs', 'findMs', 'cropMs', 'classifyMs', 'totalMs'].map((key) => [key, mean(kept.map((t) => t[key]))]));
  const handOver = means.totalMs - means.copyMs - means.findMs - means.cropMs - means.classifyMs;
  return `copy ${means.copyMs.toFixed(2)} + find ${means.findMs.toFixed(2)} + crop ${means.cropMs.toFixed(2)} + classify ${means.classifyMs.toFixed(2)} + hand-over ${handOver.toFixed(2)} ms`;
}

const file = await tarball();
const { size } = await fs.stat(file);
console.log(`${os.cpus().length} cores (${os.cpus()[0].model}), load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`${file}: ${(size / 1024).toFixed(0)} KiB`);
const app = await staticAppWith();
try {
  for (const [name, inBrowser] of Object.entries(browsers)) {
    if (chosen !== 'both' && chosen !== name) continue;
    let bytes = 0;
    const server = await serve(app, { isolated: false, onResponse: ({ sentBytes }) => { bytes += sentBytes; } });
    try {
      const first = await inBrowser(server.url, 'detectPhoto');
      console.log(`${name}: load → first detect ${first.firstResultMs.toFixed(0)} ms; ${(bytes / 1000).toFixed(0)} kB fetched (brotli), page and photo included`);
      const detect = await inBrowser(server.url, 'timeDetect', calls);
      console.log(`${name}: detect, 1 thread: ${summary(detect.ms)}`);
      const tracked = await inBrowser(server.url, 'trackCamera', frames);
      console.log(`${name}: track, ${tracked.threads} thread, ${tracked.totals.length} frames: ${summary(tracked.totals.slice(20))}; ${stageMeans(tracked.stages)}`);
    } finally {
      await server.close();
    }
    const isolated = await serve(app, { isolated: true });
    try {
      const tracked = await inBrowser(isolated.url, 'trackCamera', frames);
      console.log(`${name}: track, ${tracked.threads} threads (isolated), ${tracked.totals.length} frames: ${summary(tracked.totals.slice(20))}; ${stageMeans(tracked.stages)}`);
    } finally {
      await isolated.close();
    }
  }
} finally {
  await fs.rm(app, { recursive: true, force: true });
}
