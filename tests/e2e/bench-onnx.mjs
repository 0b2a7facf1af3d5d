// Classify speed in the page, ours against onnxruntime-web on the same model (not a test: run
// by hand after ./build.sh wasm, or by ./build.sh bench; under a minute on 2 cores):
//
//   node tests/e2e/bench-onnx.mjs [--seconds 2] [--models default,seed,deep]
//
// Opens the page in Debian's headless Chromium and, in the page's main thread, for each model
// (the default model file, or a preset with fresh weights) exports it with `Model.toOnnx()`,
// starts onnxruntime-web's wasm backend (SIMD, one thread) on those bytes, and times batches of
// 1 and 128 synthetic faces in turn through: our `Model.predict` in f32, ours in integer
// arithmetic (`setInt8Inference`, as the camera runs int8 models), and onnxruntime-web's
// `session.run` (graph optimisations on, its default). Both engines run single-threaded wasm
// here; ours also runs multi-threaded in the workers, which this does not measure. Prints the
// median milliseconds per call and per face; no assertions.
import { withBrowser, openPage, option } from './harness.mjs';
import { routeOnnxRuntime, syntheticFaces, onnxRuntimeVersion } from './onnx-web.mjs';

const seconds = Number(option('seconds', 2));
const models = option('models', 'default,seed,deep').split(',');
const BATCHES = [1, 128];

await withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  await routeOnnxRuntime(page);
  const faces = Array.from(syntheticFaces(Math.max(...BATCHES)));
  const rows = await page.evaluate(async ({ models, faces, batches, seconds }) => {
    const fer = await import('./pkg/fer_cnn.js');
    const ort = await import('/ort/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = 1;
    /** Median milliseconds of `work()` over about `seconds`, after two warm-up calls. */
    const time = async (work) => {
      await work();
      await work();
      const times = [];
      const end = performance.now() + seconds * 1000;
      while (performance.now() < end || times.length < 5) {
        const start = performance.now();
        await work();
        times.push(performance.now() - start);
      }
      times.sort((a, b) => a - b);
      return times[times.length >> 1];
    };
    const rows = [];
    for (const name of models) {
      const model = name === 'default'
        ? fer.Model.fromBytes(new Uint8Array(await (await fetch('models/default.safetensors')).arrayBuffer()))
        : fer.Model.fromPreset(name, 1n);
      const spec = model.describe().spec.name;
      const session = await ort.InferenceSession.create(model.toOnnx(), { executionProviders: ['wasm'] });
      for (const n of batches) {
        const bytes = Uint8Array.from(faces.slice(0, n * 48 * 48));
        const pixels = new ort.Tensor('float32', Float32Array.from(bytes), [n, 1, 48, 48]);
        model.setInt8Inference(false);
        const ours = await time(() => model.predict(bytes, 'none'));
        model.setInt8Inference(true);
        const oursInt8 = await time(() => model.predict(bytes, 'none'));
        const theirs = await time(() => session.run({ pixels }));
        rows.push({ model: `${name} (${spec})`, n, ours, oursInt8, theirs });
      }
      await session.release();
      model.free();
    }
    return rows;
  }, { models, faces, batches: BATCHES, seconds });

  console.log(`Chromium ${browser.version()}, headless; onnxruntime-web ${await onnxRuntimeVersion()} (wasm, SIMD, 1 thread); ours: fer-cnn wasm (SIMD, 1 thread); page main thread`);
  const header = ['model', 'batch', 'ours f32 ms', 'ours int8 ms', 'onnxruntime-web ms', 'ours f32 ms/face', 'ort-web ms/face', 'ort-web ÷ ours f32'];
  const widths = [24, 5, 11, 12, 18, 16, 15, 18];
  const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  console.log(line(header));
  for (const r of rows) {
    console.log(line([r.model, r.n, r.ours.toFixed(2), r.oursInt8.toFixed(2), r.theirs.toFixed(2), (r.ours / r.n).toFixed(3), (r.theirs / r.n).toFixed(3), `${(r.theirs / r.ours).toFixed(2)}x`]));
  }
  if (errors.length) console.log(`page errors: ${errors.join('; ')}`);
});
