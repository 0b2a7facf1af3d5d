// The camera worker: finds, crops and classifies the faces of each frame off the page's main
// thread, so the video, the boxes and the rest of the page never wait for the network. Where
// the page is cross-origin isolated, the multi-threaded engine splits each frame's large
// matrix products across every core (see engine.js).
//
// Frames reach wasm as in the rustwasm Game of Life: the wasm `Camera` owns one RGBA buffer;
// this worker keeps a typed-array view over it in `memory.buffer` and copies each frame's
// pixels in; results are read through views too, and only the few numbers a frame yields
// (boxes, 48x48 crops, probabilities, timings) go back to the page.
//
// Requests (worker-rpc.js): start {detectorManifest, detectorWeights}, model {bytes, int8
// (classify in integer arithmetic)}, tta {tta}, frame {bitmap, kind: 'video' | 'photo'} (the
// ImageBitmap is transferred and closed here). A frame's reply: {count, faces: Float32Array,
// crops: Uint8Array, probs: Float32Array, copyMs, findMs, cropMs, classifyMs, wholeFrame (1 if
// the whole frame was searched, 0 if only around the faces already known), tta (the test-time
// augmentation it was classified with), int8 (whether in integer arithmetic)}.
//
// A trap in wasm (a Rust panic, or running out of memory) is not answered as the request's
// error but reported as the worker's crash: the trap left the Rust objects mid-call (borrowed,
// half-written), so every later request would fail too. The page then starts a fresh worker.
import { loadEngine } from './engine.js';
import { serve } from './worker-rpc.js';

const engine = loadEngine('The camera');
let camera = null;
let tta = 'none';
let model = null;
let int8 = false;
let views = null;
let canvas = null;
let context = null;

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

const handlers = {
  async start({ detectorManifest, detectorWeights }) {
    const { fer, wasm, threads } = await engine;
    camera = new fer.Camera(detectorManifest, new Uint8Array(detectorWeights));
    const layout = fer.cameraLayout();
    views = new WasmViews(wasm.memory, camera, layout);
    return { threads, layout, emotions: fer.emotions() };
  },

  async model({ bytes, int8: integer }) {
    const { fer } = await engine;
    const next = fer.Model.fromBytes(new Uint8Array(bytes));
    next.setInt8Inference(integer);
    model?.free();
    model = next;
    int8 = integer;
    return {};
  },

  tta({ tta: next }) {
    camera.setTta(next);
    tta = next;
    return {};
  },

  frame({ bitmap, kind }) {
    try {
      if (!model) throw new Error('no model yet');
      const { width, height } = bitmap;
      const copyStarted = performance.now();
      if (canvas?.width !== width || canvas?.height !== height) {
        canvas = new OffscreenCanvas(width, height);
        context = canvas.getContext('2d', { willReadFrequently: true });
      }
      context.drawImage(bitmap, 0, 0);
      views.frameView(width, height).set(context.getImageData(0, 0, width, height).data);
      const copyMs = performance.now() - copyStarted;
      const count = kind === 'photo' ? camera.processPhoto(model) : camera.processVideoFrame(model);
      views.refresh();
      const { faceFields, cropSide, classes } = views.layout;
      const [findMs, cropMs, classifyMs, wholeFrame] = views.timings;
      return {
        count,
        faces: views.faces.slice(0, count * faceFields),
        crops: views.crops.slice(0, count * cropSide * cropSide),
        probs: views.probs.slice(0, count * classes),
        copyMs, findMs, cropMs, classifyMs, wholeFrame, tta, int8,
      };
    } finally {
      bitmap.close();
    }
  },
};

/** `handler`, with a wasm trap turned into an error no handler catches (see the top). */
function crashOnTrap(handler) {
  return async (message) => {
    try {
      return await handler(message);
    } catch (error) {
      if (!(error instanceof WebAssembly.RuntimeError)) throw error;
      setTimeout(() => { throw error; });
      return new Promise(() => {}); // the crash answers this request
    }
  };
}

serve(Object.fromEntries(Object.entries(handlers).map(([type, handler]) => [type, crashOnTrap(handler)])));
