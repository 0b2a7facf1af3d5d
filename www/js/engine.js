// Loads the wasm engine inside a worker: the multi-threaded build (www/pkg-threads) where the
// page is cross-origin isolated (the COOP/COEP headers ./build.sh's server sends), with one
// rayon pool thread (a Web Worker sharing this instance's memory) per logical core; elsewhere
// SharedArrayBuffer is unavailable and the single-threaded build (www/pkg) runs alone. Both
// builds give the same numbers. Used by the training and camera workers: the pool's threads
// block on Atomics.wait, which the page's main thread may not.

const messageOf = (error) => error?.message ?? String(error);

/** Resolves to `{ fer, wasm, threads }`: the module's exports, its instance exports (memory), the pool size. */
export async function loadEngine(purpose) {
  if (self.crossOriginIsolated && typeof SharedArrayBuffer === 'function') {
    try {
      const fer = await import('../pkg-threads/fer_cnn.js');
      const wasm = await fer.default();
      const threads = Math.max(1, navigator.hardwareConcurrency || 1);
      await fer.initThreadPool(threads);
      return { fer, wasm, threads };
    } catch (error) {
      console.warn(`${purpose} on one thread: the multi-threaded engine did not start (${messageOf(error)}).`);
    }
  }
  const fer = await import('../pkg/fer_cnn.js');
  const wasm = await fer.default();
  return { fer, wasm, threads: 1 };
}
