// fer-cnn in Node (20 and later), for batch work on a server: `load`, `classify`, and
// `detect` on ImageData-like `{ data, width, height }` RGBA pixels. The engine runs on the
// calling thread (single-threaded build); run several processes or worker_threads for more.
// The package's `exports` map sends Node here and browsers and bundlers to index.js, so the
// Node built-ins below never reach a browser bundle.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as engine from '../pkg/fer_cnn.js';
import { EXPRESSIONS, FerError, bytesOf, calibrationResult, captureBytes, messageOf } from './common.js';
import { Recognizer } from './recognizer.js';
import { checkedPixels, isPixels } from './sources.js';

export { EXPRESSIONS, FerError };

const packageFile = (path) => new URL(`../${path}`, import.meta.url);
const SHIPPED_MODELS = { fast: 'models/fast.safetensors', default: 'models/default.safetensors' };

let memory = null;

/** The engine, instantiated once per process. */
async function startEngine() {
  if (!memory) {
    const wasm = await readPackageFile('pkg/fer_cnn_bg.wasm', 'engine-unavailable', 'the engine');
    memory = engine.initSync({ module: wasm }).memory;
  }
  return memory;
}

async function readPackageFile(path, code, what) {
  try {
    return await readFile(packageFile(path));
  } catch (error) {
    throw new FerError(code, `Could not read ${what} (${fileURLToPath(packageFile(path))}: ${messageOf(error)}): reinstall the package.`);
  }
}

/** What `model` names, as bytes: 'default', 'fast', a file path or file: URL, or the bytes. */
async function modelFiles(model) {
  if (model in SHIPPED_MODELS) return { bytes: await readPackageFile(SHIPPED_MODELS[model], 'model-fetch', `the ${model} model`) };
  const bytes = bytesOf(model);
  if (bytes) return { bytes };
  if (typeof model === 'string' || model instanceof URL) {
    const isHttp = /^https?:/i.test(String(model));
    if (isHttp) {
      const response = await fetch(model).catch((error) => { throw new FerError('model-fetch', `Could not fetch the model from ${model} (${messageOf(error)}).`); });
      if (!response.ok) throw new FerError('model-fetch', `Could not fetch the model from ${model} (HTTP ${response.status}).`);
      return { bytes: new Uint8Array(await response.arrayBuffer()) };
    }
    try {
      return { bytes: await readFile(model) };
    } catch (error) {
      throw new FerError('model-fetch', `Could not read the model file ${model} (${messageOf(error)}).`);
    }
  }
  throw new FerError('invalid-argument', `model is 'default', 'fast', a file path or URL, or the bytes of a .safetensors or .onnx file; got ${model?.constructor?.name ?? typeof model}.`);
}

/**
 * Starts a recognizer in this thread. Options: `model` (as in the browser; a path or file:
 * URL for a file), `mirror`.
 */
export async function load({ model = 'default', mirror = false } = {}) {
  const [wasmMemory, files, manifest, weights] = await Promise.all([
    startEngine(),
    modelFiles(model),
    readPackageFile('vendor/face-detector/tiny_face_detector_model-weights_manifest.json', 'engine-unavailable', "the face detector's manifest"),
    readPackageFile('vendor/face-detector/tiny_face_detector_model.bin', 'engine-unavailable', "the face detector's weights"),
  ]);
  const recognizer = new Recognizer(engine, wasmMemory, { detectorManifest: manifest.toString('utf8'), detectorWeights: weights });
  let info;
  try {
    info = recognizer.setModel(files);
  } catch (error) {
    recognizer.free();
    throw error;
  }
  recognizer.setMirror(Boolean(mirror));
  return new NodeFer(recognizer, info);
}

class NodeFer {
  #recognizer;
  #disposed = null;

  constructor(recognizer, model) {
    this.#recognizer = recognizer;
    this.model = model;
    this.threads = 1;
    this.version = engine.version();
  }

  #live() {
    if (this.#disposed) throw this.#disposed;
    return this.#recognizer;
  }

  /** The faces in `{ data, width, height }` RGBA pixels (ImageData-like), largest first. */
  async detect(source) {
    const recognizer = this.#live();
    if (!isPixels(source)) {
      throw new FerError('source-unreadable', 'In Node, detect takes ImageData-like `{ data, width, height }` RGBA pixels (decode images with a library such as sharp: `.ensureAlpha().raw()`).');
    }
    const { data, width, height } = checkedPixels(source);
    return recognizer.detect(data, width, height, 'photo').faces;
  }

  /** Probabilities for 48x48 grey crops (n × 2304 bytes): a Float32Array of n × 7. */
  async classify(crops48) {
    return this.#live().classify(crops48);
  }

  /** As in the browser: calibrates the current model to `captures`, `[{ expression, crop }]`. */
  async calibrate(captures, { onProgress = null } = {}) {
    const { faces, labels } = captureBytes(captures);
    return calibrationResult(this.#live().calibrate(faces, labels, onProgress ?? undefined));
  }

  async setModel(model) {
    this.model = this.#live().setModel(await modelFiles(model));
    return this.model;
  }

  async setMirror(on) {
    this.#live().setMirror(Boolean(on));
  }

  dispose() {
    if (this.#disposed) return;
    this.#disposed = new FerError('disposed', 'This recognizer was disposed: call load() again for a new one.');
    this.#recognizer.free();
  }
}
