// Where the engine runs (the library's worker in a browser, the calling thread in Node): the
// wasm `Camera` finds, crops and classifies faces, the wasm `Model` classifies crops, and this
// turns what they leave in wasm memory into the plain objects the API returns.
//
// Frames reach wasm as in the rustwasm Game of Life: `Camera` owns one RGBA buffer; a
// typed-array view over it in `memory.buffer` takes each frame's pixels, and the results are
// read through views too, so only the few numbers a frame yields are copied out.
import { EXPRESSIONS, FerError, byExpression, cropBytes, messageOf } from './common.js';

// A model's own threshold (its file's `uncertain_below`) is used where it has one.
const DEFAULT_UNCERTAIN_BELOW = 0.4;

/** Typed-array views over wasm memory, made again whenever memory grows (which detaches them). */
class WasmViews {
  constructor(memory, camera, layout) {
    this.memory = memory;
    this.camera = camera;
    this.layout = layout;
    this.buffer = null;
    this.frameSize = null;
  }

  /** The frame view for `width × height` RGBA frames; the buffer is resized in wasm when needed. */
  frameView(width, height) {
    if (this.frameSize?.width !== width || this.frameSize?.height !== height) {
      this.frameAddress = this.camera.frameBuffer(width, height);
      this.frameSize = { width, height };
      this.buffer = null;
    }
    this.refresh();
    return this.frame;
  }

  refresh() {
    if (this.buffer === this.memory.buffer) return;
    const { maxFaces, faceFields, cropSide, classes, timingFields } = this.layout;
    const buffer = this.memory.buffer;
    const { width, height } = this.frameSize;
    this.frame = new Uint8Array(buffer, this.frameAddress, width * height * 4);
    this.faces = new Float32Array(buffer, this.camera.faces(), maxFaces * faceFields);
    this.crops = new Uint8Array(buffer, this.camera.crops(), maxFaces * cropSide * cropSide);
    this.probs = new Float32Array(buffer, this.camera.probs(), maxFaces * classes);
    this.timings = new Float32Array(buffer, this.camera.timings(), timingFields);
    this.buffer = buffer;
  }
}

export class Recognizer {
  /**
   * `engine`: the wasm-bindgen module's exports; `memory`: its instance's memory; the face
   * detector's manifest (text) and weights (bytes).
   */
  constructor(engine, memory, { detectorManifest, detectorWeights }) {
    this.engine = engine;
    try {
      this.camera = new engine.Camera(detectorManifest, bytesOrThrow(detectorWeights));
    } catch (error) {
      throw new FerError('detector-invalid', `The face detector's files did not load (${messageOf(error)}); reinstall the package, or check that baseUrl serves its vendor/face-detector/ folder.`);
    }
    this.layout = engine.cameraLayout();
    this.views = new WasmViews(memory, this.camera, this.layout);
    this.model = null;
    this.modelInfo = null;
    this.mirror = false;
  }

  /**
   * Makes the model in `files` current: `{ bytes }` (safetensors or ONNX), or an ONNX graph
   * with its external weights, `{ bytes, externalData: { name, bytes } }`. Resolves to what
   * `Fer.model` describes.
   */
  setModel(files) {
    const next = this.modelFrom(files);
    const { spec, parameters, macs, metadata } = next.describe();
    const [channels, height, width] = spec.input;
    if (channels !== 1 || height !== 48 || width !== 48 || spec.classes !== EXPRESSIONS.length) {
      next.free();
      throw new FerError('model-invalid', `This model takes [${spec.input}] inputs and gives ${spec.classes} classes; faces need a model of 48x48 grey inputs and FER2013's 7 expressions.`);
    }
    const precision = next.storedPrecision();
    // An 8-bit model loses nothing to integer arithmetic, which is 2–3 times faster in wasm.
    next.setInt8Inference(precision === 'int8');
    this.model?.free();
    this.model = next;
    this.files = files;
    this.modelInfo = {
      name: spec.name,
      parameters,
      multiplyAdds: macs,
      precision,
      integerArithmetic: precision === 'int8',
      temperature: next.temperature(),
      uncertainBelow: next.uncertainBelow() ?? DEFAULT_UNCERTAIN_BELOW,
      publicTestAccuracy: metadata.publictest_accuracy ?? null,
    };
    return this.modelInfo;
  }

  /** A wasm Model from `{ bytes, externalData }`. */
  modelFrom({ bytes, externalData = null }) {
    try {
      return externalData
        ? this.engine.Model.fromOnnxFiles(bytes, externalData.name, externalData.bytes)
        : this.engine.Model.fromBytes(bytes);
    } catch (error) {
      throw new FerError('model-invalid', `The model does not load: ${messageOf(error)}`);
    }
  }

  /**
   * Calibrates the current model to one person's captures (`faces`: 48x48 crops end to end,
   * `labels`: an expression index each, in capture order), calling `onProgress({ phase, done,
   * total })` between slices of work. Returns `{ report, bytes }`: the library's report and
   * the calibrated model's file, or null bytes when the calibration did not help (the report
   * says why).
   */
  calibrate(faces, labels, onProgress = () => {}) {
    let calibration;
    try {
      calibration = new this.engine.Calibration(this.modelFrom(this.files), faces, labels, undefined);
    } catch (error) {
      throw new FerError('invalid-argument', `The captures cannot be calibrated on: ${messageOf(error)}`);
    }
    try {
      for (;;) {
        const progress = calibration.advance();
        if (progress.phase === 'finished') break;
        onProgress(progress);
      }
      const report = calibration.report();
      return { report, bytes: calibration.accepted() ? calibration.export() : null };
    } finally {
      calibration.free();
    }
  }

  /** Classify each face with its mirror image too (twice the classify time), or not. */
  setMirror(on) {
    this.camera.setTta(on ? 'flip' : 'none');
    this.mirror = on;
  }

  /** The next video frame starts a new video: faces are searched whole and get new ids. */
  forget() {
    this.camera.forget();
  }

  /**
   * Finds and classifies the faces of an RGBA frame. `kind`: 'photo' (searched finely, on its
   * own) or 'video' (one frame of a stream: faces followed, ids and labels held, shown once
   * seen in a few frames). `scale` maps frame pixels back to the caller's source pixels.
   */
  detect(rgba, width, height, kind, scale = 1) {
    const started = now();
    this.frameView(width, height).set(rgba);
    return this.detectInFrame(kind, scale, now() - started);
  }

  /**
   * The view to write a `width × height` RGBA frame into, in wasm memory; then call
   * `detectInFrame`. Valid until the next call into wasm.
   */
  frameView(width, height) {
    return this.views.frameView(width, height);
  }

  /** `detect` on the frame written into `frameView`; `copyMs`: what writing it took. */
  detectInFrame(kind, scale = 1, copyMs = 0) {
    const count = kind === 'photo' ? this.camera.processPhoto(this.requireModel()) : this.camera.processVideoFrame(this.requireModel());
    this.views.refresh();
    const [findMs, cropMs, classifyMs, wholeFrame] = this.views.timings;
    const faces = [];
    for (let i = 0; i < count; i++) {
      const face = this.face(i, kind, scale);
      if (face) faces.push(face);
    }
    faces.sort((a, b) => b.box.width * b.box.height - a.box.width * a.box.height);
    return { faces, timings: { copyMs, findMs, cropMs, classifyMs, wholeFrame: wholeFrame === 1 } };
  }

  face(i, kind, scale) {
    const { faceFields, faceField: at, cropSide, classes } = this.layout;
    const record = this.views.faces.subarray(i * faceFields, (i + 1) * faceFields);
    // A video's face is reported once seen in a few frames in a row: a detector's one-frame
    // false find never is.
    if (kind === 'video' && !record[at.shown]) return null;
    const probs = Array.from(this.views.probs.subarray(i * classes, (i + 1) * classes));
    // Video: the label the tracks hold through near ties; a photo: the leading expression.
    const label = record[at.label];
    const top = Math.max(...probs);
    const crop = this.views.crops.slice(i * cropSide * cropSide, (i + 1) * cropSide * cropSide);
    const cropBox = scaled({ x: record[at.cropLeft], y: record[at.cropTop], width: record[at.cropSide], height: record[at.cropSide] }, scale);
    return {
      id: record[at.id],
      box: scaled({ x: record[at.boxLeft], y: record[at.boxTop], width: record[at.boxWidth], height: record[at.boxHeight] }, scale),
      cropBox,
      expression: EXPRESSIONS[label],
      score: probs[label],
      probabilities: byExpression(probs),
      uncertain: top < this.modelInfo.uncertainBelow,
      faceScore: record[at.score],
      quality: this.engine.faceQuality(crop, cropBox.width),
      crop,
    };
  }

  /** Probabilities for `crops48` (n 48x48 grey crops): n × 7 numbers in EXPRESSIONS' order. */
  classify(crops48) {
    return this.requireModel().predict(cropBytes(crops48), this.mirror ? 'flip' : 'none');
  }

  requireModel() {
    if (!this.model) throw new FerError('model-invalid', 'No model is loaded.');
    return this.model;
  }

  free() {
    this.model?.free();
    this.camera.free();
    this.model = null;
  }
}

function bytesOrThrow(bytes) {
  return bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
}

const scaled = ({ x, y, width, height }, scale) => ({ x: x * scale, y: y * scale, width: width * scale, height: height * scale });

const now = () => performance.now();
