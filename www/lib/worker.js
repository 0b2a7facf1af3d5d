// The library's worker: all wasm work happens here, off the page's main thread. The page side
// (index.js) sends the compiled engine, the face detector and the model once, then frames and
// crops; see `handlers` for the requests.
//
// A trap in wasm (a Rust panic, or running out of memory) is not answered as the request's
// error but reported as the worker's crash: the trap left the Rust objects mid-call, so every
// later request would fail too. The page side then starts a fresh worker.
import { FerError, messageOf } from './common.js';
import { Recognizer } from './recognizer.js';

/**
 * Serves requests with the wasm-bindgen module `engine` (the plain or the multi-threaded
 * build: each has its own small entry script, so that bundlers see one static import).
 */
export function serveRecognizer(engine) {
  let recognizer = null;
  let canvas = null;
  let context = null;

  // Whether VideoFrame.copyTo converts to RGBA here (Chromium does; where it does not, frames
  // are drawn on a canvas and read back, a copy more).
  let copyToRgba = true;

  /** An ImageBitmap's or VideoFrame's RGBA pixels, `width × height` (the source is closed). */
  function pixelsOf(source, width, height) {
    try {
      if (canvas?.width !== width || canvas?.height !== height) {
        canvas = new OffscreenCanvas(width, height);
        context = canvas.getContext('2d', { willReadFrequently: true });
      }
      context.drawImage(source, 0, 0, width, height);
      return context.getImageData(0, 0, width, height).data;
    } finally {
      source.close();
    }
  }

  /**
   * Converts `frame` to RGBA straight into wasm memory, as the rustwasm Game of Life writes
   * its cells; false (the frame left open) where this browser cannot.
   */
  async function copyVideoFrame(frame, width, height) {
    const { visibleRect } = frame;
    if (!copyToRgba || visibleRect.width !== width || visibleRect.height !== height) return false;
    try {
      await frame.copyTo(recognizer.frameView(width, height), { format: 'RGBA' });
      frame.close();
      return true;
    } catch {
      copyToRgba = false;
      return false;
    }
  }

  const handlers = {
    async start({ module, threads, detectorManifest, detectorWeights, model, mirror }) {
      const instance = await engine.default({ module_or_path: module });
      let poolThreads = 1;
      if (threads > 1 && engine.initThreadPool) {
        await engine.initThreadPool(threads);
        poolThreads = threads;
      }
      recognizer = new Recognizer(engine, instance.memory, { detectorManifest, detectorWeights });
      const info = recognizer.setModel(model);
      recognizer.setMirror(mirror);
      return { threads: poolThreads, model: info, version: engine.version() };
    },

    model(files) {
      return { model: recognizer.setModel(files) };
    },

    mirror({ on }) {
      recognizer.setMirror(on);
      return {};
    },

    forget() {
      recognizer.forget();
      return {};
    },

    async frame({ bitmap, videoFrame, pixels, width, height, kind, scale }) {
      const started = performance.now();
      if (videoFrame && await copyVideoFrame(videoFrame, width, height)) {
        // written straight into wasm memory
      } else {
        const source = videoFrame ?? bitmap;
        recognizer.frameView(width, height).set(source ? pixelsOf(source, width, height) : pixels);
      }
      const { faces, timings } = recognizer.detectInFrame(kind, scale, performance.now() - started);
      return { faces, timings, transfer: faces.map((face) => face.crop.buffer) };
    },

    calibrate({ faces, labels }, id) {
      const { report, bytes } = recognizer.calibrate(faces, labels, (progress) => self.postMessage({ id, progress }));
      return { report, bytes, transfer: bytes ? [bytes.buffer] : [] };
    },

    classify({ crops }) {
      const probabilities = recognizer.classify(crops);
      return { probabilities, transfer: [probabilities.buffer] };
    },
  };

  self.onmessage = async ({ data }) => {
    const { id, type, ...message } = data;
    try {
      const handler = handlers[type];
      if (!handler) throw new FerError('invalid-argument', `unknown request '${type}'`);
      if (type !== 'start' && !recognizer) throw new FerError('engine-unavailable', 'The engine has not started.');
      const { transfer = [], ...result } = await handler(message, id);
      self.postMessage({ id, ok: true, result }, transfer);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) {
        setTimeout(() => { throw error; }); // a crash, not an answer: see the top
        return;
      }
      self.postMessage({ id, ok: false, code: error.code ?? 'engine-error', message: messageOf(error) });
    }
  };
}
