// Nothing leaves the tab: from loading the page through the camera, loading a FER2013 file,
// training and downloading the model, every request the browser makes (the page's, its
// workers' and their threads') goes to the page's own origin; the page's
// Content-Security-Policy stops a request to any other origin before it is sent, in the page
// and in its workers; and neither development server (build.sh's, www-server.py, nor the tests'
// own, harness.mjs) serves a file outside www/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { WWW, serve, withBrowser, openPage, freePort, pagePolicy, barFacesCsvLines, dropFile, pageWorker } from './harness.mjs';
import { SCENE_FACES, readScene, enlarge, y4m } from './face-scene.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ROWS = { Training: 70, PublicTest: 14, PrivateTest: 7 };

/** A small FER2013-format CSV. */
const fer2013Csv = () => `${barFacesCsvLines(ROWS).join('\n')}\n`;

/** A server on another loopback port (so another origin) that counts the requests reaching it. */
async function otherOrigin() {
  const hits = [];
  const server = http.createServer((request, response) => {
    hits.push(request.url);
    response.writeHead(200, { 'Access-Control-Allow-Origin': '*', 'Cross-Origin-Resource-Policy': 'cross-origin' }).end('leaked');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/`, hits, close: () => new Promise((resolve) => server.close(resolve)) };
}

test('privacy: from load to camera, training and download, every request stays on the page\'s origin', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-privacy-'));
  const video = path.join(dir, 'faces.y4m');
  await fs.writeFile(video, y4m(enlarge(await readScene(), 2)));
  const fakeCamera = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${video}`];
  try {
    await withBrowser(fakeCamera, async ({ server, browser }) => {
      const context = await browser.newContext();
      // Context-wide, from before the first page: the page's requests, its workers' (and
      // their thread pools'), and any service worker's.
      const requests = [];
      context.on('request', (request) => requests.push(request.url()));
      const serviceWorkers = [];
      context.on('serviceworker', (worker) => serviceWorkers.push(worker.url()));
      context.on('page', (page) => page.on('websocket', (socket) => requests.push(socket.url())));
      const { page, errors } = await openPage(context, server.url);

      await page.click('#camera-start');
      await page.waitForSelector(`#camera[data-state="on"][data-faces="${SCENE_FACES}"]`, { timeout: 30_000 });
      await page.click('#camera-stop');

      await dropFile(page, '#drop-zone', 'fer2013.csv.gz', zlib.gzipSync(fer2013Csv()));
      await page.waitForSelector('#load-summary:not([hidden])', { timeout: 30_000 });
      await page.selectOption('#train-preset', 'seed');
      await page.fill('#train-form [name=epochs]', '1');
      await page.click('#train-start');
      await page.waitForSelector('#train[data-state="finished"]', { timeout: 60_000 });
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#model-download')]);
      assert.ok((await fs.stat(await download.path())).size > 1000, 'the model was downloaded');

      const origin = new URL(server.url).origin;
      const elsewhere = requests.filter((url) => !['data:', 'blob:'].includes(new URL(url).protocol) && new URL(url).origin !== origin);
      assert.deepEqual(elsewhere, [], 'requests to other origins');
      // A request the policy stopped is no request, but it is a console error.
      assert.deepEqual(errors, []);
      // The recording covers the workers: the thread pools' helper is fetched by them alone.
      const paths = requests.map((url) => new URL(url).pathname);
      for (const fetchedByWorkers of ['/lib/worker-threads.js', '/js/train-worker.js', '/workerHelpers.no-bundler.js']) {
        assert.ok(paths.some((p) => p.endsWith(fetchedByWorkers)), `${fetchedByWorkers} is among the ${requests.length} requests recorded`);
      }
      assert.deepEqual(serviceWorkers, []);
      assert.deepEqual(context.serviceWorkers(), []);
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('privacy: the page\'s policy stops requests to another origin before they are sent, in the page and in its workers', () => withBrowser([], async ({ server, browser }) => {
  const other = await otherOrigin();
  try {
    const { page, errors } = await openPage(browser, server.url);
    const response = await page.request.get(server.url);
    assert.equal(response.headers()['content-security-policy'], await pagePolicy(), 'the header is the meta tag\'s policy');
    await page.evaluate(() => {
      window.testViolations = [];
      document.addEventListener('securitypolicyviolation', (event) => window.testViolations.push(event.effectiveDirective));
    });

    // Without the policy each of these would reach the other server, which would answer them
    // (it allows any origin to read it).
    const fetchFails = (url) => fetch(url).then(() => 'answered', (error) => `refused: ${error.message}`);
    assert.match(await page.evaluate(fetchFails, `${other.url}page-fetch`), /^refused/);
    assert.equal(await page.evaluate((url) => new Promise((resolve) => {
      const image = new Image();
      image.onload = () => resolve('loaded');
      image.onerror = () => resolve('refused');
      image.src = url;
    }), `${other.url}page-image.png`), 'refused');
    // Each refusal is reported once per policy in force: the header's and the meta tag's.
    await page.waitForFunction(() => window.testViolations.length >= 4);
    assert.deepEqual((await page.evaluate(() => window.testViolations)).sort(), ['connect-src', 'connect-src', 'img-src', 'img-src']);

    await page.hover('#drop-zone'); // the training worker starts when the training section is approached
    await pageWorker(page, 'js/train-worker.js');
    const workers = page.workers().filter((worker) => /\/(lib\/worker-(plain|threads)|js\/train-worker)\.js$/.test(worker.url()));
    assert.equal(workers.length, 2, 'the camera and training workers');
    for (const worker of workers) {
      assert.match(await worker.evaluate(fetchFails, `${other.url}${path.basename(worker.url())}`), /^refused/, worker.url());
    }
    assert.deepEqual(other.hits, [], 'requests that reached the other origin');
    // The refusals are the policy's, reported as console errors; nothing else went wrong.
    assert.ok(errors.length >= 2);
    assert.deepEqual(errors.filter((e) => !/violates the (following|document's) Content Security Policy/.test(e)), []);
  } finally {
    await other.close();
  }
}));

/** Status and body of a GET of `rawPath`, sent as it is (fetch would resolve the dots first). */
function rawGet(port, rawPath) {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: rawPath, agent: false }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode, body: Buffer.concat(chunks).toString('latin1'), headers: response.headers }));
    });
    request.on('error', reject);
  });
}

/**
 * A root for the servers in a temporary folder: index.html (www/'s) and a link to a file
 * outside it, with that file and one whose name starts with the root's, both beside the root.
 */
async function rootWithNeighbours() {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-serve-'));
  const root = path.join(dir, 'www');
  await fs.mkdir(root);
  await fs.copyFile(path.join(WWW, 'index.html'), path.join(root, 'index.html'));
  await fs.writeFile(path.join(dir, 'secret.txt'), 'SECRET outside the root');
  await fs.writeFile(path.join(dir, 'www-secret.txt'), 'SECRET beside the root');
  await fs.symlink(path.join(dir, 'secret.txt'), path.join(root, 'link.txt'));
  return { dir, root };
}

const OUTSIDE = [
  '/../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt', '/%2e%2e%2fsecret.txt', '/.%2e/secret.txt',
  '/js/..%2f..%2fsecret.txt', '/..%2fwww-secret.txt', '/..%5csecret.txt', '/link.txt', '//secret.txt',
  '/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
];

/** Checks that the server on `port` serves `root`'s index.html and none of the files outside. */
async function refusesOutside(port, name) {
  const index = await rawGet(port, '/index.html');
  assert.equal(index.status, 200, `${name} serves the page`);
  assert.match(index.body, /Content-Security-Policy/);
  assert.equal(index.headers['content-security-policy'], await pagePolicy(), `${name} sends the page's policy`);
  for (const rawPath of OUTSIDE) {
    const { status, body } = await rawGet(port, rawPath);
    assert.notEqual(status, 200, `${name}: GET ${rawPath}`);
    assert.doesNotMatch(body, /SECRET|root:/, `${name}: GET ${rawPath}`);
  }
  // A path that is not valid percent-encoding is refused, and the server goes on.
  assert.equal((await rawGet(port, '/%E0%A4%A')).status >= 400, true);
  assert.equal((await rawGet(port, '/index.html')).status, 200, `${name} still answers`);
}

test('privacy: the tests\' server (harness.mjs) serves nothing outside its root', async () => {
  const { dir, root } = await rootWithNeighbours();
  const server = await serve(root);
  try {
    await refusesOutside(new URL(server.url).port, 'harness.mjs');
    // And from the real www/: the repository beside it stays out of reach.
    const www = await serve();
    try {
      const port = new URL(www.url).port;
      for (const rawPath of ['/../Cargo.toml', '/%2e%2e/Cargo.toml', '/..%2fCargo.toml', '/..%2fwww-server.py']) {
        assert.notEqual((await rawGet(port, rawPath)).status, 200, rawPath);
      }
    } finally {
      await www.close();
    }
  } finally {
    await server.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('privacy: build.sh\'s server (www-server.py) serves nothing outside its root', async () => {
  const { dir, root } = await rootWithNeighbours();
  const start = async (...args) => {
    const port = await freePort();
    const python = spawn('python3', [path.join(REPO, 'www-server.py'), String(port), ...args], { stdio: 'ignore' });
    for (let tries = 0; ; tries++) {
      try {
        await rawGet(port, '/index.html');
        return { port, stop: () => python.kill() };
      } catch (error) {
        if (tries > 100 || python.exitCode !== null) {
          python.kill();
          throw new Error(`www-server.py did not start (${error.message})`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };
  const server = await start(root);
  try {
    await refusesOutside(server.port, 'www-server.py');
  } finally {
    server.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
  // As ./build.sh runs it: www/ beside the script, the repository out of reach.
  const www = await start();
  try {
    assert.equal((await rawGet(www.port, '/pkg/fer_cnn_bg.wasm')).headers['content-type'], 'application/wasm');
    for (const rawPath of ['/../Cargo.toml', '/%2e%2e/Cargo.toml', '/..%2fCargo.toml', '/..%2fwww-server.py']) {
      assert.notEqual((await rawGet(www.port, rawPath)).status, 200, rawPath);
    }
  } finally {
    www.stop();
  }
});
