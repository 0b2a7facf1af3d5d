// fer-cnn in the browser: faces and their expressions from any image or video, in a worker.
//
//   import { load, EXPRESSIONS } from 'fer-cnn';
//   const fer = await load({ model: 'fast' });
//   const faces = await fer.detect(image);          // largest face first
//   const stop = fer.track(video, (faces) => { … });
//
// Every call that touches wasm runs in one Web Worker (worker.js), so the page never waits on
// the network; the page side here turns sources into frames, keeps the model's bytes to
// restart a crashed worker with, and runs the video loop. docs/api.md is the reference.
import { EXPRESSIONS, FerError, bytesOf, calibrationResult, captureBytes, cropBytes, messageOf } from './common.js';
import { BUILDS, assetUrls, buildFor, compiledEngine, fetchAsset, threadsFor } from './engine.js';
import { MAX_PHOTO_SIDE, frameOf, videoFrameOf } from './sources.js';

export { EXPRESSIONS, FerError };
export { startEngine, engineInWorker } from './engine.js';

// A worker that crashes again as soon as it starts would otherwise be restarted for ever:
// past this many crashes in a minute, the recognizer gives up.
const MAX_RESTARTS = 3;
const RESTART_WINDOW_MS = 60_000;

/**
 * Starts a recognizer: the engine in a worker, the face detector and a model. Options:
 * `model` ('default' | 'fast' | a URL | bytes of a .safetensors or .onnx file | an ONNX graph
 * with its weights file, as two Files/Blobs or `{ graph, data, dataName }`), `threads` (at most
 * this many; 1 for the single-threaded engine), `baseUrl` (where the package's files are
 * served, when not next to this module), `mirror` (also classify each face's mirror image).
 */
export async function load(options = {}) {
  const fer = new Fer(options);
  await fer.ready;
  return fer;
}

/** Starts the library's worker for `build`: a static URL each, so that bundlers find both. */
function newWorker(build) {
  return build === BUILDS.threads
    ? new Worker(new URL('./worker-threads.js', import.meta.url), { type: 'module' })
    : new Worker(new URL('./worker-plain.js', import.meta.url), { type: 'module' });
}

/** One worker and its requests; an error nothing in the worker caught is a crash. */
class WorkerConnection {
  constructor(build, onCrash) {
    this.build = build;
    this.pending = new Map();
    this.nextId = 0;
    this.crashed = null;
    this.onCrash = onCrash;
    this.worker = newWorker(build);
    this.worker.onmessage = ({ data }) => {
      const waiting = this.pending.get(data.id);
      if (!waiting) return;
      if (data.progress) {
        waiting.onProgress?.(data.progress);
        return;
      }
      this.pending.delete(data.id);
      if (data.ok) waiting.resolve(data.result);
      else waiting.reject(new FerError(data.code, data.message));
    };
    this.worker.onerror = (event) => {
      event.preventDefault();
      this.crash(new FerError('worker-crashed', `The recognizer's worker stopped (${event.message || 'it did not load'}).`));
    };
  }

  request(type, message = {}, transfer = [], onProgress = null) {
    if (this.crashed) return Promise.reject(this.crashed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, type, ...message }, transfer);
    });
  }

  crash(error) {
    if (this.crashed) return;
    this.crashed = error;
    this.worker.terminate();
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.onCrash?.(this, error);
  }

  terminate(error) {
    this.onCrash = null;
    this.crash(error);
  }
}

/** What `model` names, as `{ bytes, externalData }` for the worker. */
async function modelFiles(model, urls) {
  if (model === 'default' || model === 'fast') {
    const response = await fetchAsset(urls.models[model], 'model-fetch', `the ${model} model`);
    return { bytes: new Uint8Array(await response.arrayBuffer()), externalData: null };
  }
  if (typeof model === 'string' || model instanceof URL) {
    const url = new URL(model, globalThis.location?.href);
    const response = await fetchAsset(url, 'model-fetch', 'the model');
    return { bytes: new Uint8Array(await response.arrayBuffer()), externalData: null };
  }
  const bytes = bytesOf(model);
  if (bytes) return { bytes: bytes.slice(), externalData: null };
  if (model instanceof Blob) return { bytes: new Uint8Array(await model.arrayBuffer()), externalData: null };
  if (Array.isArray(model) && model.length === 2 && model.every((file) => file instanceof Blob)) {
    // An ONNX graph and its weights file, picked together: the graph is the one ending .onnx.
    const graph = model.find((file) => !/\.data$/i.test(file.name ?? '')) ?? model[0];
    const data = model.find((file) => file !== graph);
    return modelFiles({ graph, data, dataName: data.name }, urls);
  }
  if (model && typeof model === 'object' && 'graph' in model && 'data' in model) {
    const read = async (part) => (part instanceof Blob ? new Uint8Array(await part.arrayBuffer()) : bytesOf(part)?.slice());
    const [graph, data] = await Promise.all([read(model.graph), read(model.data)]);
    if (!graph || !data) throw new FerError('invalid-argument', 'An ONNX model with external weights is `{ graph, data, dataName }`, graph and data as bytes or Blobs.');
    return { bytes: graph, externalData: { name: model.dataName ?? model.data.name ?? '', bytes: data } };
  }
  throw new FerError('invalid-argument', `model is 'default', 'fast', a URL, the bytes of a .safetensors or .onnx file, or an ONNX graph with its weights file; got ${model?.constructor?.name ?? typeof model}.`);
}

/** A copy of `files` to transfer (the originals are kept to restart a crashed worker with). */
function copyOf({ bytes, externalData }) {
  const copy = { bytes: bytes.slice(), externalData: externalData && { name: externalData.name, bytes: externalData.bytes.slice() } };
  return { files: copy, transfer: [copy.bytes.buffer, ...(copy.externalData ? [copy.externalData.bytes.buffer] : [])] };
}

/**
 * A recognizer: `detect`, `track`, `classify`, `dispose`. Also an EventTarget: 'restart'
 * (`detail: { error, restarts }`) when its worker crashed and a fresh one took over, 'failed'
 * (`detail: { error }`) when it gave up after repeated crashes.
 */
class Fer extends EventTarget {
  #urls;
  #baseUrl;
  #threads;
  #files = null;
  #mirror;
  #connection = null;
  #ready = null; // resolves to the connection once its worker has the engine, detector and model
  #detector = null;
  #crashes = [];
  #disposed = null;
  #tracking = new Set();

  constructor({ model = 'default', threads = Infinity, baseUrl, mirror = false } = {}) {
    super();
    if (!(Number(threads) >= 1)) throw new FerError('invalid-argument', `threads must be 1 or more; got ${threads}.`);
    this.#baseUrl = baseUrl;
    this.#urls = assetUrls(baseUrl);
    this.#threads = Number(threads);
    this.#mirror = Boolean(mirror);
    /** Number of worker restarts after crashes. */
    this.restarts = 0;
    /** What the current model is: `{ name, parameters, multiplyAdds, precision, integerArithmetic, temperature, uncertainBelow, publicTestAccuracy }`. */
    this.model = null;
    /** Threads the engine runs on: 1 unless the page is cross-origin isolated. */
    this.threads = 1;
    this.ready = (async () => {
      const [files, detector] = await Promise.all([modelFiles(model, this.#urls), this.#fetchDetector()]);
      this.#files = files;
      this.#detector = detector;
      await this.#startWorker();
      return this;
    })();
  }

  async #fetchDetector() {
    const [manifest, weights] = await Promise.all([
      fetchAsset(this.#urls.detectorManifest, 'engine-unavailable', "the face detector's manifest").then((r) => r.text()),
      fetchAsset(this.#urls.detectorWeights, 'engine-unavailable', "the face detector's weights").then((r) => r.arrayBuffer()),
    ]);
    return { manifest, weights: new Uint8Array(weights) };
  }

  /** A fresh worker with everything it needs: the threaded build where possible, else the plain one. */
  #startWorker() {
    const preferred = buildFor(self, this.#threads);
    this.#ready = (async () => {
      for (const build of preferred === BUILDS.threads ? [BUILDS.threads, BUILDS.plain] : [BUILDS.plain]) {
        const module = await compiledEngine(build, this.#baseUrl);
        const connection = new WorkerConnection(build, (crashed, error) => this.#crashed(crashed, error));
        const { files, transfer } = copyOf(this.#files);
        const weights = this.#detector.weights.slice();
        try {
          const started = await connection.request('start', {
            module, threads: threadsFor(build, this.#threads), mirror: this.#mirror, model: files,
            detectorManifest: this.#detector.manifest, detectorWeights: weights,
          }, [...transfer, weights.buffer]);
          if (this.#disposed) {
            connection.terminate(this.#disposed);
            throw this.#disposed;
          }
          this.#connection = connection;
          this.threads = started.threads;
          this.model = started.model;
          this.version = started.version;
          return connection;
        } catch (error) {
          connection.terminate(error);
          const final = build === BUILDS.plain || ['model-invalid', 'detector-invalid', 'disposed'].includes(error.code);
          if (final) throw error;
          console.warn(`fer-cnn runs on one thread: the multi-threaded engine did not start (${messageOf(error)}).`);
        }
      }
    })();
    return this.#ready;
  }

  #crashed(connection, error) {
    if (connection !== this.#connection || this.#disposed) return;
    const now = performance.now();
    this.#crashes = this.#crashes.filter((when) => now - when < RESTART_WINDOW_MS).concat(now);
    if (this.#crashes.length > MAX_RESTARTS) {
      const failure = new FerError('worker-crashed', `The recognizer's worker crashed ${this.#crashes.length} times within a minute, so it was stopped (last: ${messageOf(error)}). Load a new recognizer to try again.`);
      this.#ready = Promise.reject(failure);
      this.#ready.catch(() => {});
      this.dispatchEvent(new CustomEvent('failed', { detail: { error: failure } }));
      return;
    }
    this.restarts += 1;
    console.warn(`fer-cnn: the recognizer's worker stopped (${messageOf(error)}); starting a fresh one.`);
    this.#startWorker().then(
      () => this.dispatchEvent(new CustomEvent('restart', { detail: { error, restarts: this.restarts } })),
      (failure) => {
        if (failure.code === 'worker-crashed') return; // handled as its own crash
        this.dispatchEvent(new CustomEvent('failed', { detail: { error: failure } }));
      },
    );
  }

  async #request(type, message, transfer, onProgress) {
    if (this.#disposed) throw this.#disposed;
    const connection = await this.#ready;
    return connection.request(type, message, transfer, onProgress);
  }

  /** Sends one frame of `source`; resolves to `{ faces, timings, width, height }`. */
  async #frame(source, kind) {
    const started = performance.now();
    const frame = (kind === 'video' && videoFrameOf(source)) || await frameOf(source, { maxSide: kind === 'photo' ? MAX_PHOTO_SIDE : Infinity });
    const { bitmap, videoFrame, pixels, width, height, scale } = frame;
    const picture = bitmap ?? videoFrame;
    try {
      const result = await this.#request('frame', { bitmap, videoFrame, pixels, width, height, kind, scale }, picture ? [picture] : []);
      result.timings.totalMs = performance.now() - started;
      return { ...result, width: width * scale, height: height * scale };
    } finally {
      picture?.close(); // a no-op once transferred
    }
  }

  /**
   * The faces in `source` (an <img>, <video>, <canvas>, ImageBitmap, ImageData or
   * `{ data, width, height }`, VideoFrame, OffscreenCanvas or Blob), largest first. Each face:
   * `{ box, expression, score, probabilities, uncertain, faceScore, quality, crop, cropBox, id }`.
   * The array's `frame` is `{ width, height, timings }`, as `track` reports each frame.
   */
  async detect(source) {
    const { faces, width, height, timings } = await this.#frame(source, 'photo');
    return Object.assign(faces, { frame: { width, height, timings } });
  }

  /**
   * Follows the faces of a playing `video`: `onFaces(faces, frame)` for each frame the worker
   * has processed, with faces seen in a few frames in a row, each with an `id` kept while it
   * is followed, probabilities smoothed over frames and the label held through near ties.
   * `frame`: `{ width, height, timings }`. Frames that arrive while one is being processed are
   * skipped. Returns `stop()`. `onError(error)` hears errors (default: console.error).
   */
  track(video, onFaces, { onError = (error) => console.error(error) } = {}) {
    if (this.#disposed) throw this.#disposed;
    if (!(typeof HTMLVideoElement === 'function' && video instanceof HTMLVideoElement)) {
      throw new FerError('invalid-argument', `track follows a <video> element; got ${video?.constructor?.name ?? typeof video}. Use detect() for single images.`);
    }
    if (typeof onFaces !== 'function') throw new FerError('invalid-argument', 'track needs a callback: track(video, (faces) => { … }).');
    let stopped = false;
    let inFlight = false;
    let handle = null; // the frame callback waited for; null while the page is hidden
    const useVideoFrames = 'requestVideoFrameCallback' in video;
    const hidden = () => document.visibilityState === 'hidden';
    const next = () => {
      handle = useVideoFrames ? video.requestVideoFrameCallback(onFrame) : requestAnimationFrame(onFrame);
    };
    // No work for a page nobody sees (a video's frame callbacks may go on in a hidden tab):
    // the loop stops, and starts again when the page is shown.
    const onVisibility = () => {
      if (!stopped && !hidden() && handle === null) next();
    };
    const onFrame = () => {
      handle = null;
      if (stopped || hidden()) return;
      next();
      if (inFlight || video.readyState < 2 || video.videoWidth === 0) return;
      inFlight = true;
      this.#frame(video, 'video').then((result) => {
        if (!stopped) onFaces(result.faces, { width: result.width, height: result.height, timings: result.timings });
      }, (error) => {
        // After a crash a fresh worker takes the next frame.
        if (!stopped && error.code !== 'worker-crashed') onError(error);
      }).finally(() => { inFlight = false; });
    };
    const stop = () => {
      if (stopped) return;
      stopped = true;
      this.#tracking.delete(stop);
      document.removeEventListener('visibilitychange', onVisibility);
      if (handle !== null && useVideoFrames) video.cancelVideoFrameCallback(handle);
      else if (handle !== null) cancelAnimationFrame(handle);
    };
    this.#tracking.add(stop);
    document.addEventListener('visibilitychange', onVisibility);
    // A new video: earlier faces are forgotten, so ids and smoothing start afresh.
    this.#request('forget').then(onVisibility, (error) => { if (!stopped) onError(error); });
    return stop;
  }

  /** Probabilities for 48x48 grey crops (a Uint8Array of n × 2304 bytes): a Float32Array of n × 7. */
  async classify(crops48) {
    const crops = cropBytes(crops48).slice();
    const { probabilities } = await this.#request('classify', { crops }, [crops.buffer]);
    return probabilities;
  }

  /**
   * Calibrates the current model to one person: `captures` are `[{ expression, crop }]`, a
   * few seconds of each expression in the order they were taken (a face from `track` with
   * the expression the person was asked for will do). The last quarter of each expression's
   * captures is held out to score the result. Resolves to `{ accepted, reason, model, heldOut:
   * { before, after }, referenceFaces: { faces, readPersonally }, report }`: `model` is the
   * personal model's file (load it with `setModel` or `load`), or null when calibrating did
   * not help, and `reason` says why either way. The current model is not changed.
   * `onProgress({ phase, done, total })` hears how far it is.
   */
  async calibrate(captures, { onProgress = null } = {}) {
    const { faces, labels } = captureBytes(captures);
    return calibrationResult(await this.#request('calibrate', { faces, labels }, [faces.buffer, labels.buffer], onProgress));
  }

  /** Makes `model` (as `load`'s option) current; resolves to its description (`fer.model`). */
  async setModel(model) {
    const files = await modelFiles(model, this.#urls);
    const { files: copy, transfer } = copyOf(files);
    const result = await this.#request('model', copy, transfer);
    this.#files = files;
    this.model = result.model;
    return this.model;
  }

  /** Also classify each face's mirror image and average (more accurate, twice the classify time), or not. */
  async setMirror(on) {
    await this.#request('mirror', { on: Boolean(on) });
    this.#mirror = Boolean(on);
  }

  /** Stops tracking, ends the worker and frees its memory; later calls reject with code 'disposed'. */
  dispose() {
    if (this.#disposed) return;
    this.#disposed = new FerError('disposed', 'This recognizer was disposed: call load() again for a new one.');
    for (const stop of [...this.#tracking]) stop();
    this.#connection?.terminate(this.#disposed);
  }
}
