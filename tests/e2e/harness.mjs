// Shared by the end-to-end tests and benchmarks: serve www/ on a free loopback port the way
// ./build.sh does (wasm MIME type, cross-origin isolation, the page's Content-Security-Policy
// as a header) and a static host does (compressed, with ETags), start Debian's headless
// Chromium with flags that keep it off the network (or Firefox ESR through geckodriver), and
// open the page once the engine is ready. Every test collects console errors (and window error
// events) and fails on them.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

export const WWW = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../www');

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml', '.safetensors': 'application/octet-stream', '.bin': 'application/octet-stream',
};

/** The Content-Security-Policy of `root`/index.html's meta tag, or null where it has none. */
export async function pagePolicy(root = WWW) {
  const html = await fs.readFile(path.join(root, 'index.html'), 'utf8').catch(() => '');
  return /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html)?.[1] ?? null;
}

// Compressed as static hosts serve them (brotli where the browser accepts it, else gzip), with
// the best settings, since a host compresses a static file once: text, wasm and model weights.
const COMPRESSIBLE = new Set(['.html', '.js', '.mjs', '.css', '.json', '.svg', '.wasm', '.safetensors', '.bin']);
const ENCODERS = {
  br: (bytes) => promisify(zlib.brotliCompress)(bytes, {
    params: { [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MAX_QUALITY, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }),
  gzip: (bytes) => promisify(zlib.gzip)(bytes, { level: zlib.constants.Z_BEST_COMPRESSION }),
};
// Brotli at its best quality takes seconds per megabyte: each file version is compressed once
// per process, and kept on disk for the next test file.
const compressed = new Map();
const COMPRESSED_DIR = path.join(os.tmpdir(), 'fer-e2e-compressed');

/** `bytes` encoded with `encoding` ('br' or 'gzip'), from the caches where it was done before. */
function compress(bytes, encoding) {
  const digest = crypto.createHash('sha256').update(bytes).digest('hex');
  const key = `${digest}.${encoding}`;
  if (!compressed.has(key)) {
    const file = path.join(COMPRESSED_DIR, key);
    compressed.set(key, fs.readFile(file).catch(async () => {
      const encoded = await ENCODERS[encoding](bytes);
      await fs.mkdir(COMPRESSED_DIR, { recursive: true });
      await fs.writeFile(`${file}.${process.pid}`, encoded);
      await fs.rename(`${file}.${process.pid}`, file);
      return encoded;
    }));
  }
  return compressed.get(key);
}

/** The encoding to send a `.ext` file with, given the request's Accept-Encoding and the server's `encodings`. */
function chooseEncoding(extension, acceptEncoding = '', encodings) {
  if (!COMPRESSIBLE.has(extension)) return null;
  const accepted = new Set(acceptEncoding.split(',').flatMap((part) => {
    const [name, ...parameters] = part.split(';').map((piece) => piece.trim());
    const quality = parameters.find((parameter) => parameter.startsWith('q='));
    return quality && Number(quality.slice(2)) === 0 ? [] : [name];
  }));
  return encodings.find((encoding) => accepted.has(encoding)) ?? null;
}

/**
 * Serves `root` on 127.0.0.1 at a free port; resolves to { url, close }. `isolated: false` leaves
 * out the cross-origin isolation headers, as a plain static host would (no SharedArrayBuffer, so
 * no wasm threads). The page's policy goes out as a header too, as build.sh's server sends it:
 * only a header binds the workers. Nothing outside `root` is served, through '..' (however it
 * is encoded) or through a symbolic link. `files` adds paths served from memory ({ '/x.csv':
 * bytes }), with the same headers, ahead of `root`'s.
 *
 * As a static host does: files are sent compressed with the first of `encodings` (['br',
 * 'gzip'] unless given; [] for none) that the request accepts, and with an ETag, so that a
 * revalidation (every request: 'Cache-Control: no-cache') of an unchanged file is a 304.
 * `onResponse({ path, status, encoding, bodyBytes, rawBytes, sentBytes, at })` is called for
 * each response once sent: `sentBytes` counts the status line and headers too, `at` is
 * performance.now() in this process.
 */
export async function serve(root = WWW, { isolated = true, files = {}, encodings = ['br', 'gzip'], onResponse = () => {} } = {}) {
  const realRoot = await fs.realpath(root);
  const policy = await pagePolicy(root);
  const headers = {
    ...(isolated ? { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } : {}),
    ...(policy ? { 'Content-Security-Policy': policy } : {}),
    'Cache-Control': 'no-cache',
  };
  const inside = (file) => file === realRoot || file.startsWith(realRoot + path.sep);

  /** Sends `raw`, the body of `urlPath` (its file's `extension`), compressed and revalidated as described above. */
  async function send(request, response, urlPath, raw, extension) {
    const encoding = chooseEncoding(extension, request.headers['accept-encoding'], encodings);
    const etag = `"${crypto.createHash('sha256').update(raw).digest('base64url').slice(0, 22)}${encoding ? `-${encoding}` : ''}"`;
    const typeHeaders = {
      'Content-Type': TYPES[extension] ?? 'application/octet-stream', ...headers, ETag: etag,
      ...(COMPRESSIBLE.has(extension) && encodings.length ? { Vary: 'Accept-Encoding' } : {}),
    };
    const socket = request.socket;
    const sentBefore = socket.bytesWritten;
    let body = raw;
    let status = 200;
    if (request.headers['if-none-match'] === etag) {
      status = 304;
      body = Buffer.alloc(0);
      response.writeHead(304, typeHeaders);
    } else {
      if (encoding) body = await compress(raw, encoding);
      response.writeHead(200, { ...typeHeaders, ...(encoding ? { 'Content-Encoding': encoding } : {}), 'Content-Length': body.length });
    }
    response.on('finish', () => onResponse({
      path: urlPath, status, encoding: status === 200 ? encoding : null, bodyBytes: body.length, rawBytes: status === 200 ? raw.length : 0,
      sentBytes: socket.bytesWritten - sentBefore, at: performance.now(),
    }));
    response.end(request.method === 'HEAD' ? undefined : body);
  }

  const server = http.createServer(async (request, response) => {
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(`http://x${request.url}`).pathname);
    } catch {
      return response.writeHead(400).end('bad request');
    }
    if (Object.hasOwn(files, urlPath)) return send(request, response, urlPath, Buffer.from(files[urlPath]), path.extname(urlPath));
    let body;
    let file;
    try {
      file = await fs.realpath(path.join(realRoot, urlPath.endsWith('/') ? `${urlPath}index.html` : urlPath));
      if (!inside(file)) throw new Error('outside the root');
      body = await fs.readFile(file);
    } catch {
      return response.writeHead(404).end('not found');
    }
    return send(request, response, urlPath, body, path.extname(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** Headless Chromium from Debian; `extraArgs` e.g. fake-camera flags. */
export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', ...extraArgs,
    ],
  });
}

/**
 * Serves www/ (with `serveOptions`, see `serve`), starts Chromium with `extraArgs` and runs
 * `body({ server, browser })`; both are closed afterwards, whether `body` passes or throws.
 */
export async function withBrowser(extraArgs, body, serveOptions = {}) {
  const server = await serve(WWW, serveOptions);
  try {
    const browser = await launch(extraArgs);
    try {
      return await body({ server, browser });
    } finally {
      await browser.close();
    }
  } finally {
    await server.close();
  }
}

/**
 * Opens the page in `target` (a browser, or a context with its own options) and waits until the
 * engine and the default model are loaded; resolves to { page, errors }, errors filled as it runs.
 */
export async function openPage(target, url) {
  const page = await target.newPage();
  const errors = await collectErrors(page);
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  return { page, errors };
}

/**
 * Records console errors, uncaught exceptions and window `error` events of `page` into the
 * array it resolves to (Chromium reports its workers' console messages as the page's too).
 * Call it before the page navigates.
 */
export async function collectErrors(page) {
  const errors = [];
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  page.on('pageerror', (error) => errors.push(String(error)));
  // Some window `error` events are no exception and reach neither of those, yet error trackers
  // count them ("ResizeObserver loop completed with undelivered notifications"): the page
  // reports each to the console.
  await page.addInitScript(() => {
    addEventListener('error', (event) => {
      if (event.target === window) console.error(`window error event: ${event.message}`);
    });
  });
  return errors;
}

/** A free TCP port on 127.0.0.1 (for a server a test or benchmark starts). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Headless Firefox (Debian's ESR) with `url` open, driven through geckodriver's W3C WebDriver
 * endpoints: playwright-core drives only its own patched Firefox builds. Resolves to
 * { call(method, route, body), session (the route prefix), driverPid, capabilities (the
 * session's: browserVersion…), close() }.
 */
export async function firefoxSession(url) {
  const port = await freePort();
  const geckodriver = spawn(process.env.GECKODRIVER ?? 'geckodriver', ['--port', String(port)], { stdio: 'ignore' });
  const call = async (method, route, body) => {
    const response = await fetch(`http://127.0.0.1:${port}${route}`, { method, headers: { 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
    const json = await response.json();
    if (!response.ok) throw new Error(`WebDriver ${route}: ${json.value?.message ?? response.status}`);
    return json.value;
  };
  try {
    for (let tries = 0; ; tries++) {
      try {
        await call('GET', '/status');
        break;
      } catch (error) {
        if (tries > 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
    const { sessionId, capabilities } = await call('POST', '/session', {
      capabilities: { alwaysMatch: { browserName: 'firefox', 'moz:firefoxOptions': { binary: process.env.FIREFOX ?? '/usr/bin/firefox', args: ['-headless'] } } },
    });
    const session = `/session/${sessionId}`;
    const close = async () => {
      await call('DELETE', session).catch(() => {});
      geckodriver.kill();
    };
    await call('POST', `${session}/url`, { url }).catch(async (error) => { await close(); throw error; });
    return { call, session, driverPid: geckodriver.pid, capabilities, close };
  } catch (error) {
    geckodriver.kill();
    throw error;
  }
}

/**
 * Runs in a page: the async function whose source is `source`, called with `args` in a module
 * worker (where the multi-threaded build may block, as in the page's own workers). Resolves to
 * { value } or { error }.
 */
function runInModuleWorker({ source, args }) {
  const code = `(${source})(${JSON.stringify(args)}).then((value) => postMessage({ value }), (error) => postMessage({ error: String(error?.stack ?? error) }));`;
  const worker = new Worker(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })), { type: 'module' });
  return new Promise((resolve) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (event) => resolve({ error: event.message ?? 'the worker did not start' });
  }).finally(() => worker.terminate());
}

/**
 * Headless Chromium (playwright-core) or Firefox ESR (geckodriver), by `name`, for benchmarks
 * that run in a worker: resolves to { version, inWorker(fn, args), close() }. `inWorker` opens
 * `url` afresh and runs the async function `fn(args)` (self-contained: it is passed as source)
 * in a module worker there; it resolves to what `fn` returns, or throws what it threw.
 */
export async function workerBrowser(name, url) {
  const unwrap = ({ value, error }) => {
    if (error) throw new Error(`${name}: ${error}`);
    return value;
  };
  if (name === 'chromium') {
    const browser = await launch();
    return {
      version: `Chromium ${browser.version()}`,
      async inWorker(fn, args) {
        const page = await browser.newPage();
        try {
          await page.goto(url);
          return unwrap(await page.evaluate(runInModuleWorker, { source: fn.toString(), args }));
        } finally {
          await page.close();
        }
      },
      close: () => browser.close(),
    };
  }
  if (name !== 'firefox') throw new Error(`no browser called ${name}: chromium or firefox`);
  const { call, session, capabilities, close } = await firefoxSession(url);
  await call('POST', `${session}/timeouts`, { script: 3_600_000 }).catch(async (error) => { await close(); throw error; });
  return {
    version: `Firefox ${capabilities.browserVersion}`,
    async inWorker(fn, args) {
      await call('POST', `${session}/url`, { url });
      const script = `(${runInModuleWorker})({ source: arguments[0], args: arguments[1] }).then(arguments[2]);`;
      return unwrap(await call('POST', `${session}/execute/async`, { script, args: [fn.toString(), args] }));
    },
    close,
  };
}

/** The value after `--name` on the command line, or `fallback`. */
export function option(name, fallback) {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
}

/**
 * performance.measureUserAgentSpecificMemory() in `page` (cross-origin isolated), after a
 * garbage collection where Chromium runs with --js-flags=--expose-gc: { bytes, by: { where:
 * bytes } }, `where` the page or a worker's script path. Chromium answers once every context
 * has been measured or a timeout has passed, and the wasm thread pool's workers, blocked in
 * Atomics.wait between jobs, are never measured: expect each call to take about a minute.
 */
export async function measureMemory(page) {
  return page.evaluate(async () => {
    globalThis.gc?.();
    const { bytes, breakdown } = await performance.measureUserAgentSpecificMemory();
    const by = {};
    for (const entry of breakdown) {
      const where = entry.attribution.map((a) => `${a.scope === 'Window' ? 'page' : new URL(a.url).pathname}`).join(' + ') || 'shared';
      by[where] = (by[where] ?? 0) + entry.bytes;
    }
    return { bytes, by: Object.fromEntries(Object.entries(by).sort(([a], [b]) => a.localeCompare(b))) };
  });
}

/**
 * The bytes of wasm memory of the engine in `worker` (the library's worker or the training
 * worker): the module it imported, imported again in its own scope, is the same instance.
 */
export function wasmMemoryBytes(worker) {
  return worker.evaluate(async () => {
    const pkg = self.crossOriginIsolated ? '/pkg-threads/fer_cnn.js' : '/pkg/fer_cnn.js';
    const fer = await import(new URL(pkg, self.location.href));
    return (await fer.default()).memory.buffer.byteLength;
  });
}

/** The id of the shipped model the page starts with (models.js's FIRST_MODEL), as its menu names it. */
export function firstModel(page) {
  return page.evaluate(async () => (await import(new URL('js/models.js', location.href))).FIRST_MODEL);
}

/** Where the library's worker scripts are (www/lib/worker-plain.js, worker-threads.js), for pageWorker. */
export const CAMERA_WORKER = 'lib/worker-';

/** The page's worker whose script is www/`path` (or starts with it), once it has started. */
export async function pageWorker(page, path) {
  const isIt = (worker) => new URL(worker.url()).pathname.startsWith(`/${path}`);
  return page.workers().find(isIt) ?? page.waitForEvent('worker', { predicate: isIt, timeout: 30_000 });
}

/**
 * FER2013-format lines (`emotion,pixels,Usage`, header first) with `rows[usage]` faces of each
 * usage: each emotion draws a bright bar at its own height over a gradient, so the faces differ,
 * a network learns them in an epoch, and the file compresses well.
 */
export function barFacesCsvLines(rows) {
  const lines = ['emotion,pixels,Usage'];
  let row = 0;
  for (const [usage, n] of Object.entries(rows)) {
    for (let i = 0; i < n; i++, row++) {
      const label = row % 7;
      const pixels = Array.from({ length: 2304 }, (_, p) => {
        const [x, y] = [p % 48, Math.floor(p / 48)];
        return Math.abs(y - (4 + 6 * label)) < 3 ? 230 : (x * 2 + y + row) % 120;
      });
      lines.push(`${label},${pixels.join(' ')},${usage}`);
    }
  }
  return lines;
}

/** Drops a file called `name` holding `bytes` on the element at `selector`, as a user would. */
export async function dropFile(page, selector, name, bytes) {
  const dataTransfer = await page.evaluateHandle(({ name, base64 }) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name));
    return transfer;
  }, { name, base64: Buffer.from(bytes).toString('base64') });
  await page.dispatchEvent(selector, 'drop', { dataTransfer });
}
