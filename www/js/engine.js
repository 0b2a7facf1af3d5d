// The page's own use of the engine, beyond the camera (which goes through the library's `load`):
// models read, described and written on the main thread, and the training worker. Both come
// from the library's advanced entry points, so the page and every worker share one download
// and one compilation of the wasm (see www/lib/engine.js).
import { engineInWorker, startEngine } from '../lib/index.js';

let pageExports = null;

/** Page side: resolves to `{ fer, build, module }`: the engine's exports on the main thread, its build's name and compiled module. */
export async function startPageEngine() {
  const { engine, build, module } = await startEngine();
  pageExports = engine;
  return { fer: engine, build, module };
}

/** Page side: the engine's exports, for code that runs once app.js has started it. */
export function engineExports() {
  if (!pageExports) throw new Error('the engine has not started yet');
  return pageExports;
}

/** Page side: what a worker needs to start its engine, for its first message (see `loadEngine`). */
export async function engineForWorker() {
  const { build, module } = await startEngine();
  return { build, module };
}

/**
 * Worker side: resolves to `{ fer, wasm: { memory }, threads }` once the page has sent the
 * compiled module in a message `{ engine: { build, module } }`.
 */
export async function loadEngine(purpose) {
  const sent = await new Promise((resolve) => {
    self.addEventListener('message', function take({ data }) {
      if (!data?.engine) return;
      self.removeEventListener('message', take);
      resolve(data.engine);
    });
  });
  const { engine, memory, threads } = await engineInWorker(sent, purpose);
  return { fer: engine, wasm: { memory }, threads };
}
