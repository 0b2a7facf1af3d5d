// The npm package as an app developer meets it: the tarball `./build.sh package` writes is
// installed into a fresh folder, then used from a plain static page (an import map, no build
// step, no cross-origin isolation) and from a Vite app (built, then served), in headless
// Chromium and in Firefox ESR; from Node; and from TypeScript under `tsc --strict`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { serve } from './harness.mjs';
import { BIN, builtViteApp, inChromium, inFirefox, run, staticAppWith, tarball } from './package-app.mjs';

let staticApp;
let viteApp;

before(async () => {
  staticApp = await staticAppWith(['node-check.mjs', 'example.ts', 'tsconfig.json']);
  viteApp = await builtViteApp();
});

after(async () => {
  for (const dir of [staticApp, viteApp]) if (dir) await fs.rm(dir, { recursive: true, force: true });
});

test('package: the tarball holds the library, both engine builds, both models, the detector and the licences, and nothing of Node in the browser entry', async () => {
  const { stdout } = await run('tar', ['-tzf', await tarball()]);
  const files = stdout.trim().split('\n').map((line) => line.replace(/^package\//, ''));
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'lib/index.js', 'lib/index.d.ts', 'lib/node.js', 'lib/node.d.ts',
    'lib/worker-plain.js', 'lib/worker-threads.js', 'pkg/fer_cnn.js', 'pkg/fer_cnn_bg.wasm', 'pkg-threads/fer_cnn.js',
    'pkg-threads/fer_cnn_bg.wasm', 'models/fast.safetensors', 'models/default.safetensors',
    'vendor/face-detector/tiny_face_detector_model.bin', 'vendor/face-detector/LICENSE']) {
    assert.ok(files.includes(needed), `${needed} is in the package`);
  }
  const manifest = JSON.parse(await fs.readFile(path.join(staticApp, 'node_modules/fer-cnn/package.json'), 'utf8'));
  assert.equal(manifest.type, 'module');
  assert.deepEqual(Object.keys(manifest.dependencies ?? {}), []);
  assert.deepEqual(Object.keys(manifest.peerDependencies ?? {}), []);
  assert.equal(manifest.scripts?.postinstall, undefined);
  // Node's built-ins are for the Node entry alone: the browser's modules import none.
  const lib = path.join(staticApp, 'node_modules/fer-cnn/lib');
  for (const file of (await fs.readdir(lib)).filter((name) => name.endsWith('.js') && name !== 'node.js')) {
    assert.doesNotMatch(await fs.readFile(path.join(lib, file), 'utf8'), /from 'node:|require\(/, `${file} imports no Node built-in`);
  }
});

const BROWSERS = { chromium: inChromium, firefox: inFirefox };

function assertSmilingAstronaut({ faces, bad, info, afterDispose }, where) {
  assert.equal(faces.length, 1, `${where}: one face in the photo`);
  const [face] = faces;
  assert.equal(face.expression, 'happy', `${where}: her smile is happy`);
  const sum = Object.values(face.probabilities).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - 1) < 1e-4, `${where}: probabilities sum to 1 (${sum})`);
  assert.ok(info.keysInOrder, `${where}: probabilities in EXPRESSIONS' order`);
  assert.deepEqual(info.expressions, ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']);
  assert.equal(face.score, face.probabilities.happy);
  assert.equal(face.cropBytes, 48 * 48);
  assert.ok(face.box.width > 50 && face.box.height > 50, `${where}: a face-sized box`);
  assert.ok(Array.isArray(face.quality.flags));
  assert.deepEqual(bad && { isFerError: bad.isFerError, code: bad.code }, { isFerError: true, code: 'source-unreadable' });
  assert.match(bad.message, /detect takes an <img>/);
  assert.equal(afterDispose, 'disposed');
}

function assertSteadyIds({ seen }, where) {
  const ids = new Set(seen.flatMap((faces) => faces.map((face) => face.id)));
  assert.equal(ids.size, 1, `${where}: one face, one id across ${seen.length} frames (${[...ids]})`);
  assert.ok(seen.every((faces) => faces.length === 1 && faces[0].expression === 'happy'), `${where}: happy in every frame`);
}

for (const [name, inBrowser] of Object.entries(BROWSERS)) {
  for (const kind of ['static', 'vite']) {
    test(`package: a ${kind === 'static' ? 'plain static page' : 'Vite app'} detects the smiling face and tracks a camera with one id, in ${name}`, async () => {
      const root = kind === 'static' ? staticApp : path.join(viteApp, 'dist');
      const server = await serve(root, { isolated: false, encodings: [] });
      try {
        const detected = await inBrowser(server.url, 'detectPhoto');
        assert.equal(detected.isolated, false);
        assert.equal(detected.info.threads, 1, 'one thread without cross-origin isolation');
        assertSmilingAstronaut(detected, `${kind}, ${name}`);
        console.log(`${kind}, ${name}: load to first detect ${detected.firstResultMs.toFixed(0)} ms`);
        const tracked = await inBrowser(server.url, 'trackCamera', 20);
        assertSteadyIds(tracked, `${kind}, ${name}`);
      } finally {
        await server.close();
      }
    });
  }
}

test('package: load takes PyTorch 2\'s two-file ONNX export, and says which file is missing when given the graph alone', async () => {
  const server = await serve(staticApp, { isolated: false, encodings: [] });
  try {
    const { alone, maxDifference, model } = await inChromium(server.url, 'loadPyTorchExport');
    assert.equal(alone.code, 'model-invalid');
    assert.match(alone.message, /dynamo\.onnx\.data/);
    assert.ok(maxDifference < 1e-5, `PyTorch's probabilities within 1e-5 (${maxDifference})`);
    assert.equal(model.precision, 'f32');
  } finally {
    await server.close();
  }
});

test('package: a calibration that cannot help keeps the current model and says why', async () => {
  const server = await serve(staticApp, { isolated: false, encodings: [] });
  try {
    const result = await inChromium(server.url, 'calibrateNoise');
    assert.equal(result.accepted, false);
    assert.equal(result.model, null);
    assert.match(result.reason, /kept/);
    assert.ok(result.heldOut && result.heldOut.before >= 0 && result.heldOut.after >= 0);
    assert.equal(result.referenceFaces.faces > 0, true);
    assert.ok(result.phases.includes('features'), `progress was reported (${result.phases})`);
    assert.equal(result.refused.code, 'invalid-argument');
    assert.match(result.refused.message, /Capture 0: crop is a 48x48 grey crop/);
  } finally {
    await server.close();
  }
});

test('package: Node gives the browser\'s faces and probabilities for the same pixels', async () => {
  const server = await serve(staticApp, { isolated: false, encodings: [] });
  let browser;
  try {
    browser = await inChromium(server.url, 'detectPixels');
  } finally {
    await server.close();
  }
  const input = path.join(staticApp, 'pixels.json');
  await fs.writeFile(input, JSON.stringify(browser));
  const { stdout } = await run(process.execPath, ['node-check.mjs', input], { cwd: staticApp, maxBuffer: 64 << 20 });
  const node = JSON.parse(stdout);
  assert.equal(node.faces.length, browser.faces.length);
  assert.deepEqual(node.faces[0].box, browser.faces[0].box);
  assert.deepEqual(node.faces[0].crop, browser.crop, 'the same 48x48 crop');
  for (const [k, expression] of node.expressions.entries()) {
    assert.ok(Math.abs(node.faces[0].probabilities[expression] - browser.faces[0].probabilities[expression]) < 1e-6, `${expression}: Node and browser agree`);
    assert.ok(Math.abs(node.probabilities[k] - browser.probabilities[k]) < 1e-6);
  }
  assert.equal(node.wrongSource, 'source-unreadable');
  assert.equal(node.afterDispose, 'disposed');
});

test('package: a TypeScript app compiles against the declarations under tsc --strict', async () => {
  await run(path.join(BIN, 'tsc'), ['-p', 'tsconfig.json'], { cwd: staticApp }).catch((error) => {
    throw new Error(`tsc --strict failed:\n${error.stdout}${error.stderr}`);
  });
});
