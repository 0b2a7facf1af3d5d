// The training worker. Its own wasm instance holds the dataset (faces as bytes in wasm memory)
// and the training run, so parsing 287 MB of CSV and training never block the page.
//
// Requests (worker-rpc.js): load {file} → the parse report; sample-faces {perClass} → faces;
// train {preset, config, limit, tta} → how the run ended (after the whole run); pause, resume,
// stop; inspect {row}; inspect-model {bytes, label}; export {precision} → the finished run's
// model file. Events: load-progress, train-started, train-progress, train-status, epoch,
// paused, resumed, inside. (Calibration to one person runs in the fer-cnn library's worker.)
// The run is the library's
// (`Training`): this loop only times its slices and posts what they return. It yields to the
// event loop between slices so that pause, stop and inspect requests are handled within a slice.
//
// Threads: see engine.js; the multi-threaded build's pool splits each batch.
import { loadEngine } from './engine.js';
import { withF32Decimals } from './f32.js';
import { emit, serve } from './worker-rpc.js';

// Target duration of one `trainSteps` call: progress about five times a second, and pause
// or stop obeyed within a fifth of a second (or one batch, when a batch takes longer).
const SLICE_MS = 200;
const LOAD_PROGRESS_INTERVAL_MS = 100;
const PREVIEW_FACES = 24;
const GZIP_MAGIC = [0x1f, 0x8b];

const messageOf = (error) => error?.message ?? String(error);

let fer = null; // the wasm module's exports (either build)
let wasm = null; // its instance exports (memory)
let threads = 1;
let data = null; // FaceDataset
let samplesDrawn = 0; // seeds the faces shown for browsing
let run = null; // the training run in progress
let finished = null; // the last run that ended, kept for its exports until the next one
const inspected = { row: null, model: null, label: '' }; // what "Look inside" shows when not training

const ready = loadEngine('Training').then((engine) => ({ fer, wasm, threads } = engine));

// One macrotask hop: lets queued messages (pause, stop, inspect) run between training slices,
// without setTimeout's 4 ms clamp on nested timers.
const tick = new MessageChannel();
let afterTick = null;
tick.port1.onmessage = () => afterTick();
const nextTask = () => new Promise((resolve) => { afterTick = resolve; tick.port2.postMessage(null); });

async function isGzip(file) {
  const head = new Uint8Array(await file.slice(0, 2).arrayBuffer());
  return head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1];
}

/** `file` as a stream of CSV bytes, decompressed when it is gzip; counts the bytes read from disk. */
async function csvBytes(file, counter) {
  const counted = file.stream().pipeThrough(new TransformStream({
    transform(chunk, controller) {
      counter.fileBytes += chunk.byteLength;
      controller.enqueue(chunk);
    },
  }));
  return (await isGzip(file)) ? counted.pipeThrough(new DecompressionStream('gzip')) : counted;
}

function freeData() {
  finished?.free();
  finished = null;
  data?.free();
  data = null;
}

const handlers = {
  async load({ file }) {
    if (run) throw new Error('Stop the training before loading another file.');
    freeData();
    inspected.row = null;
    const started = performance.now();
    const counter = { fileBytes: 0 };
    const loader = new fer.DatasetLoader();
    // FER2013's CSV compresses about 3.2 to 1; the hint only sizes the faces' buffer.
    loader.expectBytes((await isGzip(file)) ? file.size * 3.3 : file.size);
    let lastProgress = 0;
    try {
      const reader = (await csvBytes(file, counter)).getReader();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (error) {
          throw new Error(`could not read "${file.name}" (${messageOf(error)}): a .gz file may be truncated or damaged; try downloading it again`);
        }
        if (chunk.done) break;
        loader.push(chunk.value);
        const now = performance.now();
        if (now - lastProgress > LOAD_PROGRESS_INTERVAL_MS) {
          lastProgress = now;
          const progress = loader.progress();
          emit('load-progress', {
            fileBytes: counter.fileBytes, fileSize: file.size, csvBytes: progress.bytes_read,
            rowsOk: progress.rows_ok, rowsBad: progress.rows_bad, seconds: (now - started) / 1000,
          });
        }
      }
      data = loader.finish();
    } finally {
      loader.free();
    }
    return {
      name: file.name, fileSize: file.size, report: data.report(), seconds: (performance.now() - started) / 1000,
      faces: data.length, wasmMemoryBytes: wasm.memory.buffer.byteLength,
    };
  },

  /** Random faces of each emotion from the whole file. */
  'sample-faces'({ perClass }) {
    if (!data) throw new Error('Load the FER2013 file first.');
    const classes = data.sampleByClass(perClass, BigInt(++samplesDrawn)).map((sample) => ({ ...sample, faces: data.faces(Uint32Array.from(sample.rows)) }));
    return { classes, transfer: classes.map((c) => c.faces.buffer) };
  },

  async train({ preset, config, limit, tta }) {
    if (!data) throw new Error('Load the FER2013 file first.');
    if (run) throw new Error('A training run is already going: stop it first.');
    finished?.free();
    finished = null;
    const training = new fer.Training(fer.Model.fromPreset(preset, BigInt(config.seed)), data, config, limit, tta);
    run = { training, paused: false, stopRequested: false, wake: null };
    try {
      const result = await trainLoop(run, preset, config);
      finished = training;
      return result;
    } catch (error) {
      training.free();
      throw error;
    } finally {
      run = null;
    }
  },

  /** The finished run's model at `precision` ('f32', 'f16' or 'int8'), as `fer train` writes it. */
  export({ precision }) {
    if (!finished) throw new Error('No model trained in this tab to export: train one first.');
    const bytes = finished.export(data, precision);
    return { bytes, transfer: [bytes.buffer] };
  },

  pause() {
    if (run) run.paused = true;
  },

  resume() {
    if (!run) return;
    run.paused = false;
    run.wake?.();
  },

  stop() {
    if (!run) return;
    run.stopRequested = true;
    run.wake?.();
  },

  inspect({ row }) {
    inspected.row = row;
    emitInside();
  },

  /** The page's current model, shown by "Look inside" while nothing is training. */
  'inspect-model'({ bytes, label }) {
    const model = fer.Model.fromBytes(bytes);
    inspected.model?.free();
    inspected.model = model;
    inspected.label = label;
    if (!run) emitInside();
  },
};

function floatView(tensor) {
  return tensor && { shape: tensor.shape, values: Float32Array.from(tensor.values) };
}

/** Filters and every layer's output for the inspected face, from the model in training or the page's model. */
function emitInside() {
  const source = run ? run.training : inspected.model;
  if (!data || inspected.row == null || !source) return;
  const row = inspected.row;
  const face = data.face(row);
  const layers = source.inspect(face).map(({ layer, shape, values }) => ({ layer: withF32Decimals(layer), shape, values: Float32Array.from(values) }));
  const filters = floatView(source.filters());
  const modelLabel = run ? `the model being trained (after ${run.training.epochsCompleted()} epochs)` : inspected.label;
  emit(
    'inside',
    { row, label: data.label(row), usage: data.usage(row), face, modelLabel, layers, filters },
    [face.buffer, ...layers.map((l) => l.values.buffer), ...(filters ? [filters.values.buffer] : [])],
  );
}

function predictPreview(training, rows) {
  const probs = training.predict(data, rows);
  const classes = probs.length / rows.length;
  return Array.from(rows, (_, i) => {
    const p = probs.subarray(classes * i, classes * (i + 1));
    const predicted = fer.argmax(p);
    return { predicted, confidence: p[predicted] };
  });
}

/** Training speed and time left: images per second over the last few slices, and the work after
 * each epoch (forward passes only) timed. */
class Stopwatch {
  constructor(totalSamples, epochs, epochEndSamples) {
    Object.assign(this, { totalSamples, epochs, epochEndSamples });
    this.samplesDone = 0;
    this.trainSeconds = 0;
    this.epochEnds = 0;
    this.epochEndSeconds = 0;
    this.recentImagesPerSecond = null;
  }

  trained(samples, seconds) {
    this.samplesDone += samples;
    this.trainSeconds += seconds;
    const speed = samples / seconds;
    this.recentImagesPerSecond = this.recentImagesPerSecond == null ? speed : 0.8 * this.recentImagesPerSecond + 0.2 * speed;
  }

  epochEnded(seconds) {
    this.epochEnds += 1;
    this.epochEndSeconds += seconds;
  }

  secondsLeft() {
    // Until the first epoch's end is timed, guess it from the training speed: a forward pass
    // is about a third of a training step.
    const perEpochEnd = this.epochEnds
      ? this.epochEndSeconds / this.epochEnds
      : this.epochEndSamples / (3 * this.recentImagesPerSecond);
    return (this.totalSamples - this.samplesDone) / this.recentImagesPerSecond +
      (this.epochs - this.epochEnds) * perEpochEnd;
  }

  averageImagesPerSecond() {
    return this.samplesDone / Math.max(this.trainSeconds, 1e-9);
  }
}

const secondsSince = (start) => (performance.now() - start) / 1000;

/** Trains `run.training` to the end (or a stop), posting what each slice and epoch's end return. */
async function trainLoop(run, preset, config) {
  const { training } = run;
  const trainRows = training.trainRows;
  const preview = data.spreadRows(PREVIEW_FACES);
  const previewFaces = data.faces(preview);
  emit('train-started', {
    preset, epochs: config.epochs, trainRows, threads,
    preview: { rows: Array.from(preview), labels: Array.from(preview, (row) => data.label(row)), faces: previewFaces },
  }, [previewFaces.buffer]);

  const endEpoch = () => {
    const faces = training.epochEndFaces();
    if (faces) emit('train-status', { text: `Measuring batch-norm statistics and evaluating: ${faces.toLocaleString('en')} faces…` });
    const started = performance.now();
    const report = withF32Decimals(training.endEpoch(data));
    clock.epochEnded(secondsSince(started));
    return report;
  };
  const clock = new Stopwatch(config.epochs * trainRows, config.epochs, training.epochEndFaces());
  let stepsPerSlice = 1;
  let slice = null;
  while (!slice?.finished && !run.stopRequested) {
    if (run.paused) {
      emit('paused');
      await new Promise((resolve) => { run.wake = resolve; });
      run.wake = null;
      if (!run.paused) emit('resumed');
      continue;
    }
    const started = performance.now();
    slice = training.trainSlice(data, stepsPerSlice);
    if (slice.diverged) break;
    const seconds = secondsSince(started);
    clock.trained(slice.samples, seconds);
    stepsPerSlice = Math.max(1, Math.min(100, Math.round(SLICE_MS / 1000 / (seconds / slice.steps))));
    emit('train-progress', {
      epoch: slice.epochs_trained,
      loss: slice.loss,
      accuracy: slice.correct / slice.samples,
      lr: slice.lr,
      samplesDone: clock.samplesDone,
      totalSamples: clock.totalSamples,
      imagesPerSecond: clock.recentImagesPerSecond,
      etaSeconds: clock.secondsLeft(),
      filters: floatView(training.filters()),
    });
    if (slice.epoch_finished) {
      const report = endEpoch();
      emit('epoch', { ...report, predictions: predictPreview(training, preview) });
      emitInside();
    }
    await nextTask();
  }

  // A diverged run has its last good weights back: those of its last epoch's end, or none.
  const diverged = slice?.diverged ?? null;
  const completed = Boolean(slice?.finished) && !diverged;
  const epochsTrained = diverged ? diverged.restored_epoch : slice?.epochs_trained ?? 0;
  if (!diverged && !Number.isInteger(epochsTrained)) endEpoch(); // stopped mid-epoch: measure the statistics of the steps since
  let privateTest = null;
  if (completed && data.rows('PrivateTest').length) {
    emit('train-status', { text: 'Final evaluation on the PrivateTest faces…' });
    privateTest = withF32Decimals(training.evaluate(data, 'PrivateTest'));
  }
  const modelBytes = epochsTrained > 0 || !diverged ? training.export(data, 'f32') : null;
  return {
    preset, completed, epochsTrained, trainRows, privateTest, modelBytes, diverged: diverged?.message ?? null,
    averageImagesPerSecond: clock.averageImagesPerSecond(), trainSeconds: clock.trainSeconds,
    transfer: modelBytes ? [modelBytes.buffer] : [],
  };
}
serve(handlers, ready);
