// Shared by onnx.test.mjs and bench-inference.mjs: onnxruntime-web (npm, in node_modules) served
// to the page under /ort/ through a Playwright route, so it runs inside the page on the page's
// origin (its Content-Security-Policy allows nothing else), and faces the engines classify.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'node_modules/onnxruntime-web/dist');
const TYPES = { '.mjs': 'text/javascript', '.js': 'text/javascript', '.wasm': 'application/wasm' };

/**
 * Serves onnxruntime-web's files to `page` at /ort/, and `files` (name → bytes) at /ort/files/.
 * Only names in onnxruntime-web's dist folder are served.
 */
export async function routeOnnxRuntime(page, files = {}) {
  const available = new Set(await fs.readdir(DIST));
  await page.route((url) => url.pathname.startsWith('/ort/'), async (route) => {
    const name = new URL(route.request().url()).pathname.slice('/ort/'.length);
    const headers = { 'Cross-Origin-Resource-Policy': 'same-origin' };
    if (name.startsWith('files/') && files[name.slice('files/'.length)]) {
      return route.fulfill({ status: 200, contentType: 'application/octet-stream', headers, body: files[name.slice('files/'.length)] });
    }
    if (!available.has(name)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ status: 200, contentType: TYPES[path.extname(name)] ?? 'application/octet-stream', headers, body: await fs.readFile(path.join(DIST, name)) });
  });
}

/** onnxruntime-web's version, from its package.json. */
export async function onnxRuntimeVersion() {
  return JSON.parse(await fs.readFile(path.join(DIST, '../package.json'), 'utf8')).version;
}

/** `count` deterministic 48x48 grey faces (bytes end to end) with shading, a face-like blob and noise. */
export function syntheticFaces(count) {
  let state = 0x2545f491;
  const noise = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return (state >>> 8) / (1 << 24) - 0.5;
  };
  const faces = new Uint8Array(count * 48 * 48);
  for (let i = 0; i < count; i++) {
    const [fx, fy, contrast] = [0.05 + 0.02 * (i % 7), 0.03 + 0.03 * (i % 5), 40 + (i % 4) * 25];
    for (let y = 0; y < 48; y++) {
      for (let x = 0; x < 48; x++) {
        const [dx, dy] = [x - 24, y - 20 - (i % 6)];
        const blob = dx * dx / 200 + dy * dy / 300 < 1 ? 40 : -20;
        const value = 128 + contrast * Math.sin(fx * x + fy * y + i) + blob + 60 * noise();
        faces[(i * 48 + y) * 48 + x] = Math.max(0, Math.min(255, value));
      }
    }
  }
  return faces;
}

/**
 * In the page (run with page.evaluate): starts onnxruntime-web's wasm backend on one thread
 * with the model at /ort/files/`model`, and keeps it as `window.ortSession`, with `window.ortRun(facesBytes)`
 * resolving to the probabilities (a Float32Array, n × 7) for 48x48 faces given as bytes.
 */
export async function startOnnxRuntimeInPage(model) {
  const ort = await import('/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = 1;
  const bytes = new Uint8Array(await (await fetch(`/ort/files/${model}`)).arrayBuffer());
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  window.ortSession = session;
  window.ortRun = async (faces) => {
    const n = faces.length / (48 * 48);
    const pixels = new ort.Tensor('float32', Float32Array.from(faces), [n, 1, 48, 48]);
    const { probabilities } = await session.run({ pixels });
    return probabilities.data;
  };
  return { inputs: session.inputNames, outputs: session.outputNames };
}
