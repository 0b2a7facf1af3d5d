// The in-page half of bench-tfjs.mjs: trains one architecture with one engine for a fixed time
// and returns images/s (`window.bench`), or says which gradients a TF.js backend lacks
// (`window.probe`). One configuration per page load, because TF.js fixes the wasm backend's
// thread count when the backend starts.
import init, { DatasetLoader, Model, Training, trainingOptions } from '/www/pkg/fer_cnn.js';

const tf = window.tf;
const SIDE = 48;
const CLASSES = 7;
const BATCH = 64;
const LR = 1e-3;
// Our Adam's constants; TF.js's epsilon defaults to 1e-7, so it is passed explicitly.
const ADAM = { type: 'adam', beta1: 0.9, beta2: 0.999, epsilon: 1e-8 };
const TFJS_WASM_FILES = '/tests/e2e/bench/node_modules/@tensorflow/tfjs-backend-wasm/dist/';

/** `rows` random faces (48x48 bytes each, end to end) and labels, from a fixed seed. */
function syntheticFaces(rows) {
  let state = 1;
  const random = () => { // mulberry32
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const faces_u8 = new Uint8Array(rows * SIDE * SIDE).map(() => Math.floor(random() * 256));
  const labels = new Uint8Array(rows).map(() => Math.floor(random() * CLASSES));
  return { faces_u8, labels };
}

/** The faces as a FER2013 CSV, every row a Training row. */
function fer2013Csv({ faces_u8, labels }) {
  const lines = ['emotion,pixels,Usage'];
  for (let row = 0; row < labels.length; row++) {
    lines.push(`${labels[row]},${faces_u8.subarray(row * SIDE * SIDE, (row + 1) * SIDE * SIDE).join(' ')},Training`);
  }
  return `${lines.join('\n')}\n`;
}

/** Calls `step` (which resolves to the images it trained on) for `warmupSeconds` (at least
 *  once: the first step creates the kernels, and V8 optimises hot wasm as it runs), then for
 *  `seconds` (at least once); images/s over the timed calls only. `setAside()` is any time
 *  spent in the timed calls that the caller wants reported apart (the stand-in kernel's). */
async function timeTraining(step, { seconds, warmupSeconds, setAside = () => 0 }) {
  const run = async (budget) => {
    let images = 0;
    let steps = 0;
    let elapsed = 0;
    const setAsideBefore = setAside();
    const start = performance.now();
    while (steps === 0 || elapsed < budget) {
      images += await step();
      steps += 1;
      elapsed = (performance.now() - start) / 1000;
    }
    return { images, steps, seconds: elapsed, setAsideSeconds: setAside() - setAsideBefore };
  };
  const warmup = await run(warmupSeconds);
  const timed = await run(seconds);
  return {
    imagesPerSecond: timed.images / timed.seconds,
    images: timed.images,
    steps: timed.steps,
    seconds: timed.seconds,
    warmupSteps: warmup.steps,
    warmupSeconds: warmup.seconds,
    standInSeconds: timed.setAsideSeconds,
  };
}

/** Ours: the CSV through DatasetLoader, then `trainSlice` one batch per call. */
async function oursTraining(preset, faces) {
  await init();
  const loader = new DatasetLoader();
  loader.push(new TextEncoder().encode(fer2013Csv(faces)));
  const data = loader.finish();
  const config = {
    ...trainingOptions().defaults,
    epochs: 1_000_000, // never finishes while timed
    batch_size: BATCH, lr: LR, optimizer: ADAM, schedule: { type: 'constant' },
    augment: null, mixup_alpha: 0, label_smoothing: 0, class_weights: false, weight_decay: 0, seed: 1,
  };
  const model = Model.fromPreset(preset, 1n);
  const parameters = model.describe().parameters;
  const training = new Training(model, data, config, undefined, 'none');
  return { parameters, step: async () => training.trainSlice(data, 1).samples };
}

/** Our presets (src/models/presets.rs) layer for layer, in TF.js's NHWC layout. */
function tfjsModel(preset) {
  const conv = (filters, kernelSize, options = {}) =>
    tf.layers.conv2d({ filters, kernelSize, padding: 'same', kernelInitializer: 'heNormal', ...options });
  const dense = (units, options = {}) => tf.layers.dense({ units, kernelInitializer: 'leCunNormal', ...options });
  const inputShape = [SIDE, SIDE, 1];
  if (preset === 'seed') {
    return tf.sequential({
      layers: [
        conv(8, 4, { inputShape, activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 8, strides: 8 }),
        conv(16, 2, { activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 3, strides: 3 }),
        tf.layers.flatten(),
        dense(64, { activation: 'relu' }),
        dense(CLASSES),
      ],
    });
  }
  const vggBlocks = { deep: [[32, 32], [64, 64], [128, 128], [256]], fast: [[16], [32, 32], [64, 64], [128, 112]] };
  if (preset in vggBlocks) {
    const layers = [];
    for (const block of vggBlocks[preset]) {
      for (const filters of block) {
        layers.push(
          conv(filters, 3, layers.length === 0 ? { inputShape } : {}),
          // Our batch-norm: running statistics move 10% per batch, epsilon 1e-5.
          tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 }),
          tf.layers.reLU(),
        );
      }
      layers.push(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    }
    layers.push(tf.layers.flatten(), tf.layers.dropout({ rate: 0.4 }), dense(CLASSES));
    return tf.sequential({ layers });
  }
  throw new Error(`no TF.js twin for preset '${preset}'`);
}

/** TF.js: the same faces as one tensor, batches drawn as ours draws them (a shuffled pass
 *  over the rows, 64 at a time), one `optimizer.minimize` per batch. */
function tfjsTraining(preset, faces) {
  const model = tfjsModel(preset);
  const optimizer = tf.train.adam(LR, ADAM.beta1, ADAM.beta2, ADAM.epsilon);
  const rows = faces.labels.length;
  const images = tf.tensor4d(Float32Array.from(faces.faces_u8, (p) => (p - 128) / 64), [rows, SIDE, SIDE, 1]);
  const targets = tf.tidy(() => tf.oneHot(tf.tensor1d(faces.labels, 'int32'), CLASSES).toFloat());
  const order = Int32Array.from({ length: rows }, (_, i) => i);
  let cursor = rows;
  const nextBatch = () => {
    if (cursor >= rows) {
      tf.util.shuffle(order);
      cursor = 0;
    }
    const batch = order.slice(cursor, cursor + BATCH);
    cursor += BATCH;
    return batch;
  };
  const parameters = model.trainableWeights.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0);
  const step = async () => {
    const batch = nextBatch();
    const loss = tf.tidy(() => {
      const index = tf.tensor1d(batch, 'int32');
      const x = tf.gather(images, index);
      const y = tf.gather(targets, index);
      return optimizer.minimize(() => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true })), true);
    });
    await loss.data(); // as ours reports each batch's loss
    loss.dispose();
    return batch.length;
  };
  return { parameters, step };
}

/** Starts a TF.js backend; for wasm, asks for `threads` (null: TF.js's default, `all`: every
 *  logical core), which must be set before the backend starts. Resolves to the threads used. */
async function startBackend(backend, threads) {
  if (backend === 'wasm') {
    tf.wasm.setWasmPaths(TFJS_WASM_FILES);
    if (threads != null) tf.wasm.setThreadsCount(threads === 'all' ? navigator.hardwareConcurrency : threads);
  }
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} did not start`);
  await tf.ready();
  return backend === 'wasm' ? tf.wasm.getThreadsCount() : 1;
}

/** Conv2DBackpropFilter for stride 1, which the wasm backend lacks, as the backend's own Conv2D:
 *  dW[kh, kw, ci, co] = Σ_{n, y, x} x[n, y + kh − top, x + kw − left, ci] · dy[n, y, x, co] is a
 *  valid convolution of x seen as [ci, h, w, n] by dy seen as [oh, ow, n, co], giving
 *  [ci, kh, kw, co]. A stand-in, so the rest of TF.js's wasm training can be timed; returns a
 *  function giving the seconds spent in it so far (the backend is synchronous). */
function registerWasmFilterGradient() {
  let seconds = 0;
  const conv2d = tf.getKernel('Conv2D', 'wasm').kernelFunc;
  const transpose = tf.getKernel('Transpose', 'wasm').kernelFunc;
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs: { x, dy }, backend, attrs }) => {
      const start = performance.now();
      const { strides, pad, dimRoundingMode, filterShape, dataFormat } = attrs;
      if (dataFormat !== 'NHWC') throw new Error(`stand-in Conv2DBackpropFilter: ${dataFormat} not supported`);
      const info = tf.backend_util.computeConv2DInfo(x.shape, filterShape, strides, 1, pad, dimRoundingMode);
      if (info.strideHeight !== 1 || info.strideWidth !== 1) throw new Error('stand-in Conv2DBackpropFilter: stride 1 only');
      const { top, bottom, left, right } = info.padInfo;
      const xT = transpose({ inputs: { x }, backend, attrs: { perm: [3, 1, 2, 0] } });
      const dyT = transpose({ inputs: { x: dy }, backend, attrs: { perm: [1, 2, 0, 3] } });
      const product = conv2d({
        inputs: { x: xT, filter: dyT },
        backend,
        attrs: { strides: 1, pad: [[0, 0], [top, bottom], [left, right], [0, 0]], dataFormat: 'NHWC', dilations: 1, dimRoundingMode },
      });
      const dW = transpose({ inputs: { x: product }, backend, attrs: { perm: [1, 2, 0, 3] } });
      for (const t of [xT, dyT, product]) backend.disposeData(t.dataId);
      seconds += (performance.now() - start) / 1000;
      return dW;
    },
  });
  return () => seconds;
}

/** Largest difference between the stand-in filter gradient and TF.js cpu's own kernel, for
 *  the kernel shapes the presets use. Leaves the wasm backend active. */
async function checkWasmFilterGradient() {
  const cases = [{ x: [3, 48, 48, 1], f: [4, 4, 1, 8] }, { x: [3, 6, 6, 8], f: [2, 2, 8, 16] }, { x: [2, 12, 12, 5], f: [3, 3, 5, 7] }];
  let worst = 0;
  for (const { x, f } of cases) {
    const values = (shape) => Float32Array.from({ length: shape.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * 12.9898) * 0.5);
    const [xs, dys] = [values(x), values([x[0], x[1], x[2], f[3]])];
    const gradient = async (backend) => {
      await tf.setBackend(backend);
      const dW = tf.tidy(() => {
        const dy = tf.tensor4d(dys, [x[0], x[1], x[2], f[3]]);
        return tf.grad((filter) => tf.conv2d(tf.tensor4d(xs, x), filter, 1, 'same').mul(dy).sum())(tf.zeros(f));
      });
      const out = await dW.data();
      dW.dispose();
      return out;
    };
    const reference = await gradient('cpu');
    const standIn = await gradient('wasm');
    for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs(reference[i] - standIn[i]) / (1 + Math.abs(reference[i])));
  }
  return worst;
}

function environment() {
  return {
    crossOriginIsolated: window.crossOriginIsolated,
    hardwareConcurrency: navigator.hardwareConcurrency,
    userAgent: navigator.userAgent,
    tfjs: tf.version.tfjs,
    tfjsBackendWasm: tf.wasm.version_wasm,
  };
}

/** One configuration: `engine` `ours` or `tfjs`; for TF.js, `backend` (`wasm` or `cpu`),
 *  `threads` (see startBackend) and `standInFilterGradient` (register the stand-in first). */
window.bench = async ({ engine, preset, seconds, warmupSeconds, rows, backend, threads = null, standInFilterGradient = false }) => {
  const faces = syntheticFaces(rows);
  const result = { ...environment(), engine, preset, backend: engine === 'ours' ? 'wasm' : backend };
  let training;
  let standInSeconds;
  if (engine === 'ours') {
    training = await oursTraining(preset, faces);
    result.threads = 1;
  } else {
    result.threads = await startBackend(backend, threads);
    if (standInFilterGradient) {
      standInSeconds = registerWasmFilterGradient();
      result.standInMaxRelativeError = await checkWasmFilterGradient();
    }
    training = tfjsTraining(preset, faces);
  }
  result.parameters = training.parameters;
  Object.assign(result, await timeTraining(training.step, { seconds, warmupSeconds, setAside: standInSeconds }));
  if (engine === 'tfjs') result.tensorsAfter = tf.memory().numTensors;
  return result;
};

// The gradients a training step of the presets needs, each on its own.
const GRADIENTS = [
  ['conv2d: gradient w.r.t. the input', () => tf.grad((x) => tf.conv2d(x, tf.ones([3, 3, 2, 4]), 1, 'same').sum())(tf.ones([2, 6, 6, 2]))],
  ['conv2d: gradient w.r.t. the filter', () => tf.grad((f) => tf.conv2d(tf.ones([2, 6, 6, 2]), f, 1, 'same').sum())(tf.ones([3, 3, 2, 4]))],
  ['fused conv2d + bias + relu (tf.layers.conv2d)', () => tf.grads((x, f, b) => tf.fused.conv2d({ x, filter: f, bias: b, strides: 1, pad: 'same', activation: 'relu' }).sum())([tf.ones([2, 6, 6, 2]), tf.ones([4, 4, 2, 3]), tf.zeros([3])])],
  ['maxPool', () => tf.grad((x) => tf.maxPool(x, 2, 2, 'valid').sum())(tf.randomNormal([2, 4, 4, 3]))],
  ['batchNorm with batch moments (training)', () => tf.grads((x, scale, offset) => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.batchNorm(x, mean, variance, offset, scale, 1e-5).square().sum();
  })([tf.randomNormal([2, 4, 4, 3]), tf.ones([3]), tf.zeros([3])])],
  ['relu', () => tf.grad((x) => tf.relu(x).sum())(tf.randomNormal([10]))],
  ['matMul + bias (dense)', () => tf.grads((x, w) => tf.fused.matMul({ a: x, b: w, bias: tf.ones([3]) }).sum())([tf.ones([2, 4]), tf.ones([4, 3])])],
  ['dropout', () => tf.grad((x) => tf.dropout(x, 0.4).sum())(tf.ones([2, 8]))],
  ['softmax cross-entropy', () => tf.grad((logits) => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d([1, 2], 'int32'), 7).toFloat(), logits))(tf.randomNormal([2, 7]))],
];

/** Which of GRADIENTS `backend` computes, whether a whole training step of each of `presets`
 *  runs (pass none for the cpu backend: a step of `deep` takes minutes there), and the threads
 *  the backend runs when asked for `threads` (see startBackend). */
window.probe = async ({ backend, threads = null, presets = [] }) => {
  const result = { ...environment(), backend, threads: await startBackend(backend, threads), gradients: [], trainingStep: {} };
  for (const [name, gradient] of GRADIENTS) {
    try {
      const outputs = tf.tidy(() => [gradient()].flat());
      for (const output of outputs) {
        await output.data();
        output.dispose();
      }
      result.gradients.push({ name, ok: true });
    } catch (error) {
      result.gradients.push({ name, ok: false, error: error.message });
    }
  }
  for (const preset of presets) {
    try {
      await tfjsTraining(preset, syntheticFaces(BATCH)).step();
      result.trainingStep[preset] = { ok: true };
    } catch (error) {
      result.trainingStep[preset] = { ok: false, error: error.message };
    }
  }
  return result;
};

window.benchReady = true;
