// The wasm engine, fetched and compiled once per page and shared by the page and its workers.
//
// Where the page is cross-origin isolated (the COOP/COEP headers ./build.sh's server sends)
// the multi-threaded build (www/pkg-threads) runs, with one rayon pool thread (a Web Worker
// sharing its instance's memory) per logical core in each worker that classifies or trains;
// elsewhere SharedArrayBuffer is unavailable and the single-threaded build (www/pkg) runs
// alone. Both builds give the same numbers.
//
// The page compiles its build's wasm (`pageEngine`) and instantiates it for itself: models are
// read, described and written on the main thread, which never runs a network (nothing there
// splits work across threads, so the threaded build's instance needs no pool). Each worker is
// handed the compiled WebAssembly.Module in its first message (WorkerClient in worker-rpc.js
// sends it) and instantiates it with its own memory (`loadEngine`); its pool threads get the
// module from it in turn. So the page downloads one build, once.

const messageOf = (error) => error?.message ?? String(error);

const BUILDS = { threads: 'pkg-threads', plain: 'pkg' };

/** The build this scope can run: the multi-threaded one where memory can be shared. */
function buildFor(scope) {
  return scope.crossOriginIsolated && typeof SharedArrayBuffer === 'function' ? BUILDS.threads : BUILDS.plain;
}

/** The wasm-bindgen module of `build` (its JavaScript side). */
const importBuild = (build) => (build === BUILDS.threads ? import('../pkg-threads/fer_cnn.js') : import('../pkg/fer_cnn.js'));

/** Fetches and compiles `build`'s wasm, compiling while it downloads where the server allows. */
async function compileBuild(build) {
  const url = new URL(`../${build}/fer_cnn_bg.wasm`, import.meta.url);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`the engine (${url.pathname}) is missing (HTTP ${response.status}); run ./build.sh wasm`);
  if (response.headers.get('Content-Type') === 'application/wasm') return WebAssembly.compileStreaming(response);
  // A server that sends another type: compiled once the whole file has arrived.
  return WebAssembly.compile(await response.arrayBuffer());
}

/** `build` compiled and instantiated here: `{ fer, wasm, build, module }`. */
async function instantiate(build) {
  const [fer, module] = await Promise.all([importBuild(build), compileBuild(build)]);
  const wasm = await fer.default({ module_or_path: module });
  return { fer, wasm, build, module };
}

let pageEngine = null;
let pageExports = null;

/**
 * Page side: resolves to `{ fer, wasm, build, module }`: the build's exports (its instance for
 * the main thread), its instance exports, its name and the compiled module the workers share.
 * Fetched and compiled on the first call only.
 */
export function startPageEngine() {
  pageEngine ??= instantiate(buildFor(self)).catch((error) => {
    if (buildFor(self) === BUILDS.plain) throw error;
    console.warn(`The page runs the single-threaded engine: the multi-threaded one did not start (${messageOf(error)}).`);
    return instantiate(BUILDS.plain);
  }).then((engine) => {
    pageExports = engine.fer;
    return engine;
  });
  return pageEngine;
}

/** Page side: the engine's exports, for code that runs once app.js has started it. */
export function engineExports() {
  if (!pageExports) throw new Error('the engine has not started yet');
  return pageExports;
}

/** Page side: what a worker needs to start its engine, for its first message (see `loadEngine`). */
export async function engineForWorker() {
  const { build, module } = await startPageEngine();
  return { build, module };
}

/**
 * Worker side: resolves to `{ fer, wasm, threads }` (the module's exports, its instance exports
 * (memory), the pool size) once the page has sent the compiled module in a message
 * `{ engine: { build, module } }`. A threaded engine whose pool does not start is replaced by
 * the single-threaded build, fetched then.
 */
export async function loadEngine(purpose) {
  const { build, module } = await new Promise((resolve) => {
    self.addEventListener('message', function take({ data }) {
      if (!data?.engine) return;
      self.removeEventListener('message', take);
      resolve(data.engine);
    });
  });
  if (build === BUILDS.threads) {
    try {
      const fer = await importBuild(build);
      const wasm = await fer.default({ module_or_path: module });
      const threads = Math.max(1, navigator.hardwareConcurrency || 1);
      await fer.initThreadPool(threads);
      return { fer, wasm, threads };
    } catch (error) {
      console.warn(`${purpose} on one thread: the multi-threaded engine did not start (${messageOf(error)}).`);
      const { fer, wasm } = await instantiate(BUILDS.plain);
      return { fer, wasm, threads: 1 };
    }
  }
  const fer = await importBuild(build);
  const wasm = await fer.default({ module_or_path: module });
  return { fer, wasm, threads: 1 };
}
