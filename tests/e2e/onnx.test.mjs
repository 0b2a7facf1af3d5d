// ONNX in the page: "Download as ONNX" gives a model that onnxruntime-web (an independent
// runtime, run inside the same page) classifies as our engine does, within 1e-4 per
// probability; "Load a model file" takes the .onnx back, and it classifies exactly as the model
// it was exported from. PyTorch 2.x's two-file export (graph + .onnx.data) loads too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { withBrowser, openPage } from './harness.mjs';
import { routeOnnxRuntime, startOnnxRuntimeInPage, syntheticFaces, onnxRuntimeVersion } from './onnx-web.mjs';

const TOLERANCE = 1e-4;
const FACES = 32;

test('the page downloads the model as ONNX; onnxruntime-web agrees with us and the file loads back', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  await page.selectOption('#model-select', 'default'); // compared below with models/default.safetensors
  await page.waitForFunction(() => document.querySelector('#model-select').value === 'default');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#model-download-onnx')]);
  assert.match(download.suggestedFilename(), /^fer-.+\.onnx$/);
  const onnx = await fs.readFile(await download.path());
  assert.match(await page.textContent('#keep-status'), /as ONNX/);

  await routeOnnxRuntime(page, { 'model.onnx': onnx });
  const faces = Array.from(syntheticFaces(FACES));
  const names = await page.evaluate(startOnnxRuntimeInPage, 'model.onnx');
  assert.deepEqual(names, { inputs: ['pixels'], outputs: ['probabilities'] });
  const { theirs, ours, single } = await page.evaluate(async (faces) => {
    const fer = await import('./pkg/fer_cnn.js');
    await fer.default(); // the page itself may run the other build
    const bytes = new Uint8Array(await (await fetch('models/default.safetensors')).arrayBuffer());
    const model = fer.Model.fromBytes(bytes);
    const ours = Array.from(model.predict(Uint8Array.from(faces), 'none'));
    model.free();
    const theirs = Array.from(await window.ortRun(faces));
    const single = Array.from(await window.ortRun(faces.slice(0, 48 * 48)));
    return { theirs, ours, single };
  }, faces);
  assert.equal(theirs.length, FACES * 7);
  const difference = Math.max(...ours.map((p, i) => Math.abs(p - theirs[i])));
  console.log(`default model: onnxruntime-web ${await onnxRuntimeVersion()} vs ours, max |probability difference| ${difference.toExponential(2)} on ${FACES} faces (Chromium ${browser.version()})`);
  assert.ok(difference <= TOLERANCE, `onnxruntime-web differs from our engine by ${difference}`);
  assert.ok(Math.max(...single.map((p, i) => Math.abs(p - theirs[i]))) < 1e-6, 'a batch of one gives what the batch gave');

  // Every preset (fresh weights; `seed` has TensorFlow-style uneven padding), exported by the
  // same facade, run by onnxruntime-web in the page.
  const presets = await page.evaluate(async (faces) => {
    const fer = await import('./pkg/fer_cnn.js');
    await fer.default(); // the page itself may run the other build
    const ort = await import('/ort/ort.wasm.min.mjs');
    const differences = {};
    for (const name of ['seed', 'mlp', 'deep', 'deeper']) {
      const model = fer.Model.fromPreset(name, 1n);
      const session = await ort.InferenceSession.create(model.toOnnx(), { executionProviders: ['wasm'] });
      const pixels = new ort.Tensor('float32', Float32Array.from(faces), [faces.length / 2304, 1, 48, 48]);
      const theirs = (await session.run({ pixels })).probabilities.data;
      const ours = model.predict(Uint8Array.from(faces), 'none');
      differences[name] = Math.max(...ours.map((p, i) => Math.abs(p - theirs[i])));
      await session.release();
      model.free();
    }
    return differences;
  }, faces);
  for (const [name, difference] of Object.entries(presets)) {
    console.log(`${name} (fresh weights): max |probability difference| ${difference.toExponential(2)}`);
    assert.ok(difference <= TOLERANCE, `${name}: onnxruntime-web differs from our engine by ${difference}`);
  }

  // The .onnx loads back through "Load a model file", and classifies as the model it came from.
  await page.setInputFiles('#model-file', { name: 'default.onnx', mimeType: 'application/octet-stream', buffer: onnx });
  await page.waitForFunction(() => /Now using/.test(document.querySelector('#keep-status').textContent));
  assert.equal(await page.inputValue('#model-select'), 'file');
  const reloaded = await page.evaluate(async (faces) => {
    const fer = await import('./pkg/fer_cnn.js');
    await fer.default(); // the page itself may run the other build
    const model = fer.Model.fromBytes(new Uint8Array(await (await fetch('/ort/files/model.onnx')).arrayBuffer()));
    const probabilities = Array.from(model.predict(Uint8Array.from(faces), 'none'));
    const name = model.describe().spec.name;
    model.free();
    return { probabilities, name };
  }, faces);
  assert.equal(reloaded.name, 'deep-x2');
  assert.deepEqual(reloaded.probabilities, ours, 'the imported model classifies exactly as the exported one');

  // A file that is neither kind is refused with a message, and the model stays.
  await page.setInputFiles('#model-file', { name: 'notes.onnx', mimeType: 'application/octet-stream', buffer: Buffer.from('not a model') });
  await page.waitForSelector('#keep-error:not([hidden])');
  assert.match(await page.textContent('#keep-error'), /not a model this page can load: .*safetensors.*nor is it an ONNX model/);
  assert.deepEqual(errors, []);
}));

// PyTorch 2.x's default export is two files, NAME.onnx and NAME.onnx.data (external weights):
// "Load a model file" takes both selected together, in either order; the graph alone is
// refused naming the file it needs (tests/fixtures/pytorch_onnx/, reference/torch/onnx_exporters.py).
test('the page loads an ONNX graph together with its .onnx.data weights file', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  const fixtures = new URL('../fixtures/pytorch_onnx/', import.meta.url);
  const file = async (name) => ({ name, mimeType: 'application/octet-stream', buffer: await fs.readFile(new URL(name, fixtures)) });
  const [graph, data] = [await file('dynamo.onnx'), await file('dynamo.onnx.data')];

  await page.setInputFiles('#model-file', graph);
  await page.waitForSelector('#keep-error:not([hidden])');
  assert.match(await page.textContent('#keep-error'), /"dynamo\.onnx" is not a model this page can load: .*'dynamo\.onnx\.data'.*select both files/);

  await page.setInputFiles('#model-file', [data, graph]);
  await page.waitForFunction(() => /Now using/.test(document.querySelector('#keep-status').textContent));
  assert.equal(await page.inputValue('#model-select'), 'file');
  assert.match(await page.textContent('#model-info'), /main_graph · 3\D?687 parameters/);
  assert.deepEqual(errors, []);
}));
