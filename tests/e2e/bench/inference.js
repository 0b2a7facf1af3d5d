// The in-page half of bench-inference.mjs: classifies the same faces with the same model in
// three engines, one thread each, in this tab (`window.inferenceBench`), and says how far
// their probabilities are apart. Loaded by index.html next to bench.js.
//   - ours: `Model.predict` from www/pkg (single-threaded wasm, simd128), in f32 and in integer
//     arithmetic (`setInt8Inference`, as the camera runs int8 models);
//   - TensorFlow.js on its wasm backend (XNNPACK, simd), `setThreadsCount(1)`: the model rebuilt
//     layer for layer with the Layers API from our spec, our weights copied in, then
//     `model.predict` and a softmax;
//   - onnxruntime-web (wasm, simd, `numThreads = 1`) on our `Model.toOnnx()` export;
//   - optionally ours from another build (`baseline`: a copy of an older www/pkg), to compare
//     a change with what came before in the same run.
// The engines take turns call by call, so load that drifts on the machine shifts them alike.

const tf = window.tf;
const SIDE = 48;
const TFJS_WASM_FILES = '/tests/e2e/bench/node_modules/@tensorflow/tfjs-backend-wasm/dist/';
const ORT_FILES = '/tests/e2e/node_modules/onnxruntime-web/dist/';

/** The tensors of a safetensors file of f32 values, by name: { shape, values }. */
function readSafetensors(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const tensors = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [start, end] } = entry;
    if (dtype !== 'F32') throw new Error(`${name}: expected F32 values, got ${dtype}`);
    const data = bytes.slice(8 + headerLength + start, 8 + headerLength + end);
    tensors[name] = { shape, values: new Float32Array(data.buffer) };
  }
  return tensors;
}

/** Our conv weight `[filters, channels, k, k]` (filters `first..first + count`) as TF.js's `[k, k, channels, filters]`. */
function convKernel({ shape: [, channels, k], values }, first, count) {
  const out = new Float32Array(k * k * channels * count);
  for (let f = 0; f < count; f++) {
    for (let c = 0; c < channels; c++) {
      for (let t = 0; t < k * k; t++) out[(t * channels + c) * count + f] = values[(((first + f) * channels + c) * k * k) + t];
    }
  }
  return tf.tensor4d(out, [k, k, channels, count]);
}

const slice = (values, first, count) => tf.tensor1d(values.slice(first, first + count));

/**
 * Our spec as a TF.js Layers model (NHWC) with our weights. A grouped convolution (the merged
 * `deep-x2`: two members side by side) becomes one branch per group: TF.js's conv2d has no
 * groups. The convolution before the first grouped one (which sees the one input channel) is
 * split by filters, each branch its own member; the dense layer after the branches is one dense
 * per branch on its own features, added (our flatten is channel-major, TF.js's channel-last,
 * so each dense weight is re-ordered to match).
 */
function tfjsTwin(spec, tensors) {
  const branches = Math.max(1, ...spec.layers.filter((l) => l.type === 'conv2d').map((l) => l.groups ?? 1));
  const input = tf.input({ shape: [SIDE, SIDE, spec.input[0]] });
  let xs = [input];
  let shape = [...spec.input]; // [c, h, w] per sample; [features] after flatten
  const weights = []; // [layer, [tensors]] set once the model is built
  spec.layers.forEach((layer, i) => {
    const at = (name) => tensors[`layers.${i}.${name}`];
    if (layer.type === 'conv2d') {
      if (layer.stride !== 1 || layer.padding !== 'same') throw new Error(`no TF.js twin for ${JSON.stringify(layer)}`);
      const groups = layer.groups ?? 1;
      if (groups !== 1 && groups !== branches) throw new Error(`no TF.js twin for ${groups} groups in a ${branches}-branch model`);
      if (groups === 1 && xs.length > 1) throw new Error('no TF.js twin for an ungrouped convolution after grouped ones');
      const sources = xs.length === 1 ? Array(branches).fill(xs[0]) : xs;
      const perBranch = layer.filters / branches;
      xs = sources.map((x, b) => {
        const conv = tf.layers.conv2d({ filters: perBranch, kernelSize: layer.kernel, padding: 'same' });
        const y = conv.apply(x);
        weights.push([conv, [convKernel(at('weight'), b * perBranch, perBranch), slice(at('bias').values, b * perBranch, perBranch)]]);
        return y;
      });
      shape = [layer.filters, shape[1], shape[2]];
    } else if (layer.type === 'batch_norm') {
      if (shape.length !== 3) throw new Error('no TF.js twin for batch-norm after flatten');
      const perBranch = shape[0] / xs.length;
      xs = xs.map((x, b) => {
        const norm = tf.layers.batchNormalization({ epsilon: 1e-5 });
        const y = norm.apply(x);
        weights.push([norm, ['gamma', 'beta', 'running_mean', 'running_var'].map((name) => slice(at(name).values, b * perBranch, perBranch))]);
        return y;
      });
    } else if (layer.type === 'relu') {
      xs = xs.map((x) => tf.layers.reLU().apply(x));
    } else if (layer.type === 'max_pool') {
      xs = xs.map((x) => tf.layers.maxPooling2d({ poolSize: layer.window, strides: layer.stride }).apply(x));
      shape = [shape[0], Math.floor((shape[1] - layer.window) / layer.stride) + 1, Math.floor((shape[2] - layer.window) / layer.stride) + 1];
    } else if (layer.type === 'flatten') {
      xs = xs.map((x) => tf.layers.flatten().apply(x));
      shape = [shape[0], shape[1] * shape[2]]; // [channels, positions], flat from here
    } else if (layer.type === 'dropout') {
      // The identity in evaluation.
    } else if (layer.type === 'dense') {
      const { shape: [units, inputs], values } = at('weight');
      // Input j of branch b: channel c, position p of a flatten (ours: c·P + p; TF.js: p·C_b + c).
      const [channels, positions] = shape.length === 2 ? shape : [inputs, 1];
      const branchChannels = channels / xs.length;
      const ys = xs.map((x, b) => {
        const dense = tf.layers.dense({ units, useBias: b === 0 });
        const kernel = new Float32Array(branchChannels * positions * units);
        for (let c = 0; c < branchChannels; c++) {
          for (let p = 0; p < positions; p++) {
            for (let u = 0; u < units; u++) kernel[(p * branchChannels + c) * units + u] = values[u * inputs + (b * branchChannels + c) * positions + p];
          }
        }
        weights.push([dense, b === 0 ? [tf.tensor2d(kernel, [branchChannels * positions, units]), tf.tensor1d(at('bias').values)] : [tf.tensor2d(kernel, [branchChannels * positions, units])]]);
        return dense.apply(x);
      });
      xs = [ys.length > 1 ? tf.layers.add().apply(ys) : ys[0]];
      shape = [units, 1];
    } else {
      throw new Error(`no TF.js twin for layer ${JSON.stringify(layer)}`);
    }
  });
  const model = tf.model({ inputs: input, outputs: tf.layers.softmax().apply(xs[0]) });
  for (const [layer, values] of weights) {
    layer.setWeights(values);
    tf.dispose(values);
  }
  return model;
}

/** Median milliseconds per call of each of `works` (name → async function), called in turn
 *  for about `seconds` in all (at least 5 rounds) after two warm-up rounds. */
async function medianMsInTurn(works, seconds) {
  const entries = Object.entries(works);
  for (let round = 0; round < 2; round++) for (const [, work] of entries) await work();
  const times = Object.fromEntries(entries.map(([name]) => [name, []]));
  const end = performance.now() + seconds * 1000;
  for (let round = 0; round < 5 || performance.now() < end; round++) {
    for (const [name, work] of entries) {
      const start = performance.now();
      await work();
      times[name].push(performance.now() - start);
    }
  }
  const median = (list) => list.sort((a, b) => a - b)[list.length >> 1];
  return Object.fromEntries(Object.entries(times).map(([name, list]) => [name, median(list)]));
}

const largestDifference = (a, b) => a.reduce((worst, v, i) => Math.max(worst, Math.abs(v - b[i])), 0);

/** Our engine from the package at `url` (`/www/pkg`), started. */
async function ourEngine(url) {
  const fer = await import(`${url}/fer_cnn.js`);
  await fer.default();
  return fer;
}

/** Ours on `bytes` in f32 (and in integer arithmetic): a function timing can call, and its probabilities. */
function oursPredict(model, bytes, int8) {
  const work = () => {
    model.setInt8Inference(int8);
    return model.predict(bytes, 'none');
  };
  return { work, probs: work() };
}

/**
 * For each model (`default`: www/models/default.safetensors; else a preset with seed-1 weights)
 * and batch size: median ms per call of ours in f32 and in integer arithmetic, TF.js and
 * onnxruntime-web (ours from the package at URL `pkg`, and from `baseline` when given), and the largest
 * difference of each engine's probabilities from ours in f32. `faces` are 48x48 bytes end to
 * end (at least the largest batch); `seconds` is the time per model and batch.
 */
window.inferenceBench = async ({ models, batches, seconds, faces, pkg = '/www/pkg', baseline = null }) => {
  const fer = await ourEngine(pkg);
  const older = baseline ? await ourEngine(baseline) : null;
  tf.wasm.setWasmPaths(TFJS_WASM_FILES);
  tf.wasm.setThreadsCount(1);
  if (!(await tf.setBackend('wasm'))) throw new Error('TF.js wasm backend did not start');
  await tf.ready();
  const ort = await import(`${ORT_FILES}ort.wasm.min.mjs`);
  ort.env.wasm.wasmPaths = ORT_FILES;
  ort.env.wasm.numThreads = 1;
  const facesU8 = Uint8Array.from(faces);
  const defaultModel = new Uint8Array(await (await fetch('/www/models/default.safetensors')).arrayBuffer());
  const load = (engine, name) => (name === 'default' ? engine.Model.fromBytes(defaultModel) : engine.Model.fromPreset(name, 1n));
  const rows = [];
  for (const name of models) {
    const ours = load(fer, name);
    const oursBefore = older ? load(older, name) : null;
    const { spec } = ours.describe();
    const twin = tfjsTwin(spec, readSafetensors(ours.toBytes('f32')));
    const session = await ort.InferenceSession.create(ours.toOnnx(), { executionProviders: ['wasm'] });
    for (const n of batches) {
      const bytes = facesU8.subarray(0, n * SIDE * SIDE);
      const normalised = Float32Array.from(bytes, (p) => (p - 128) / 64);
      const pixels = new ort.Tensor('float32', Float32Array.from(bytes), [n, 1, SIDE, SIDE]);
      const engines = { ours: oursPredict(ours, bytes, false), oursInt8: oursPredict(ours, bytes, true) };
      if (oursBefore) Object.assign(engines, { baseline: oursPredict(oursBefore, bytes, false), baselineInt8: oursPredict(oursBefore, bytes, true) });
      const tfjsWork = async () => {
        const probs = tf.tidy(() => twin.predict(tf.tensor4d(normalised, [n, SIDE, SIDE, 1]), { batchSize: n }));
        const values = await probs.data();
        probs.dispose();
        return values;
      };
      engines.tfjs = { work: tfjsWork, probs: await tfjsWork() };
      const ortWork = async () => (await session.run({ pixels })).probabilities.data;
      engines.ort = { work: ortWork, probs: await ortWork() };
      const ms = await medianMsInTurn(Object.fromEntries(Object.entries(engines).map(([engine, { work }]) => [engine, work])), seconds);
      const differences = Object.fromEntries(Object.entries(engines).map(([engine, { probs }]) => [engine, largestDifference(probs, engines.ours.probs)]));
      rows.push({ model: name, spec: spec.name, n, ms, differences });
    }
    await session.release();
    twin.dispose();
    ours.free();
    oursBefore?.free();
  }
  return {
    rows,
    tfjs: tf.version.tfjs,
    tfjsThreads: tf.wasm.getThreadsCount(),
    userAgent: navigator.userAgent,
    tensorsLeft: tf.memory().numTensors,
  };
};

window.inferenceBenchReady = true;
