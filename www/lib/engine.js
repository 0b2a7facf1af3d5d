// The wasm engine: two builds of the same Rust, fetched and compiled once per page.
//
// Where the page is cross-origin isolated (COOP/COEP headers) the multi-threaded build
// (pkg-threads/) runs, with one rayon pool thread (a Web Worker sharing its instance's memory)
// per logical core in each worker that classifies or trains; elsewhere SharedArrayBuffer is
// unavailable and the single-threaded build (pkg/) runs alone. Both give the same numbers.
//
// The page compiles the build's wasm once (`compiledEngine`) and hands the WebAssembly.Module
// to each worker, which instantiates it with its own memory, so one download serves them all.
// Asset URLs are written as `new URL('literal', import.meta.url)` so that bundlers (Vite,
// webpack 5, esbuild with its loader) find and copy the files with no configuration.
import { FerError, messageOf } from './common.js';

export const BUILDS = Object.freeze({ threads: 'pkg-threads', plain: 'pkg' });

/** The build `scope` can run with at most `threads` threads: threaded only where memory can be shared. */
export function buildFor(scope, threads = Infinity) {
  const canShare = scope.crossOriginIsolated && typeof SharedArrayBuffer === 'function';
  return canShare && threads > 1 ? BUILDS.threads : BUILDS.plain;
}

/** Threads a worker of `build` runs: every logical core, at most `threads`. */
export function threadsFor(build, threads = Infinity) {
  if (build === BUILDS.plain) return 1;
  return Math.max(1, Math.min(threads, navigator.hardwareConcurrency || 1));
}

/** Where the package's files are: next to this module, or under `baseUrl` when one is given. */
export function assetUrls(baseUrl) {
  if (baseUrl !== undefined && baseUrl !== null) {
    const base = new URL(String(baseUrl).replace(/\/?$/, '/'), globalThis.location?.href);
    const at = (path) => new URL(path, base);
    return {
      wasm: { [BUILDS.plain]: at('pkg/fer_cnn_bg.wasm'), [BUILDS.threads]: at('pkg-threads/fer_cnn_bg.wasm') },
      detectorManifest: at('vendor/face-detector/tiny_face_detector_model-weights_manifest.json'),
      detectorWeights: at('vendor/face-detector/tiny_face_detector_model.bin'),
      models: { fast: at('models/fast.safetensors'), default: at('models/default.safetensors') },
    };
  }
  return {
    wasm: {
      [BUILDS.plain]: new URL('../pkg/fer_cnn_bg.wasm', import.meta.url),
      [BUILDS.threads]: new URL('../pkg-threads/fer_cnn_bg.wasm', import.meta.url),
    },
    detectorManifest: new URL('../vendor/face-detector/tiny_face_detector_model-weights_manifest.json', import.meta.url),
    detectorWeights: new URL('../vendor/face-detector/tiny_face_detector_model.bin', import.meta.url),
    models: {
      fast: new URL('../models/fast.safetensors', import.meta.url),
      default: new URL('../models/default.safetensors', import.meta.url),
    },
  };
}

/** `url`'s response, or a FerError with `code` naming what was missing. */
export async function fetchAsset(url, code, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new FerError(code, `Could not fetch ${what} from ${url} (${messageOf(error)}): check the network, or the baseUrl option.`);
  }
  if (!response.ok) throw new FerError(code, `Could not fetch ${what} from ${url} (HTTP ${response.status}): check that the package's files are served there, or set baseUrl.`);
  return response;
}

const compiled = new Map(); // wasm URL -> Promise<WebAssembly.Module>

/** `build`'s wasm compiled (while it downloads, where the server sends application/wasm); once per URL. */
export function compiledEngine(build, baseUrl) {
  const url = String(assetUrls(baseUrl).wasm[build]);
  if (!compiled.has(url)) {
    const compiling = (async () => {
      const response = await fetchAsset(url, 'engine-unavailable', 'the engine');
      try {
        if (response.headers.get('Content-Type') === 'application/wasm') return await WebAssembly.compileStreaming(response);
        return await WebAssembly.compile(await response.arrayBuffer());
      } catch (error) {
        throw new FerError('engine-unavailable', `The engine (${url}) did not compile (${messageOf(error)}): this browser needs WebAssembly with SIMD (Chrome 91, Firefox 89, Safari 16.4 or later).`);
      }
    })();
    compiling.catch(() => compiled.delete(url)); // a later call tries again
    compiled.set(url, compiling);
  }
  return compiled.get(url);
}

/** The wasm-bindgen module (the JavaScript side) of `build`. */
export const importEngine = (build) => (build === BUILDS.threads ? import('../pkg-threads/fer_cnn.js') : import('../pkg/fer_cnn.js'));

let mainThreadEngine = null;

/**
 * The engine instantiated on this thread, for apps that use its low-level API themselves (the
 * demo page's training reads and writes model files here): resolves to
 * `{ engine, memory, build, module }`, the wasm-bindgen exports, the instance's memory, the
 * build's name and the compiled module that workers can be given. The threaded build starts
 * no pool here. Fetched and compiled on the first call only.
 */
export function startEngine({ baseUrl } = {}) {
  mainThreadEngine ??= (async () => {
    const preferred = buildFor(self);
    for (const build of preferred === BUILDS.threads ? [BUILDS.threads, BUILDS.plain] : [BUILDS.plain]) {
      try {
        const [engine, module] = await Promise.all([importEngine(build), compiledEngine(build, baseUrl)]);
        const { memory } = await engine.default({ module_or_path: module });
        return { engine, memory, build, module };
      } catch (error) {
        if (build === BUILDS.plain) throw error;
        console.warn(`The single-threaded engine runs: the multi-threaded one did not start (${messageOf(error)}).`);
      }
    }
  })();
  return mainThreadEngine;
}

/**
 * In a worker of the app's own: instantiates the compiled `module` of `build` (as
 * `startEngine` gives it) with its own memory and, for the threaded build, a thread pool;
 * resolves to `{ engine, memory, threads }`. A threaded engine whose pool does not start is
 * replaced by the single-threaded build.
 */
export async function engineInWorker({ build, module, baseUrl }, purpose = 'The engine') {
  if (build === BUILDS.threads) {
    try {
      const engine = await importEngine(build);
      const { memory } = await engine.default({ module_or_path: module });
      const threads = threadsFor(build);
      await engine.initThreadPool(threads);
      return { engine, memory, threads };
    } catch (error) {
      console.warn(`${purpose} runs on one thread: the multi-threaded engine did not start (${messageOf(error)}).`);
      const plain = await compiledEngine(BUILDS.plain, baseUrl);
      const engine = await importEngine(BUILDS.plain);
      const { memory } = await engine.default({ module_or_path: plain });
      return { engine, memory, threads: 1 };
    }
  }
  const engine = await importEngine(build);
  const { memory } = await engine.default({ module_or_path: module });
  return { engine, memory, threads: 1 };
}
