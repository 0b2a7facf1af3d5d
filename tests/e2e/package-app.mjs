// Apps that install the fer-cnn package, for package.test.mjs and bench-package.mjs: the
// tarball `./build.sh package` writes, installed into a fresh folder with the files of
// package-app/, and a way to call the functions app.js leaves on `window` in Chromium or Firefox.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { collectErrors, firefoxSession, launch } from './harness.mjs';

export const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
export const APP = path.join(HERE, 'package-app');
export const BIN = path.join(HERE, 'node_modules/.bin');
export const PHOTO = path.join(ROOT, 'tests/fixtures/images/astronaut.jpg');
const PYTORCH_ONNX = path.join(ROOT, 'tests/fixtures/pytorch_onnx');

export async function tarball() {
  const cargo = await fs.readFile(path.join(ROOT, 'Cargo.toml'), 'utf8');
  const version = /^version = "([^"]+)"/m.exec(cargo)[1];
  const file = path.join(ROOT, 'dist', `fer-cnn-${version}.tgz`);
  await fs.access(file).catch(() => { throw new Error(`${file} is missing: run ./build.sh package`); });
  return file;
}

/** A fresh app folder with the app's files, the photo and the package installed from the tarball. */
export async function appWith(files) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fer-app-'));
  for (const file of files) await fs.copyFile(path.join(APP, file), path.join(dir, file));
  await fs.writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'an-app', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock', '--loglevel=error', await tarball()], { cwd: dir });
  return dir;
}

/**
 * The plain static app (index.html with an import map, app.js, the photo, PyTorch's two-file
 * ONNX export), with `extra` files of package-app/.
 */
export async function staticAppWith(extra = []) {
  const dir = await appWith(['index.html', 'app.js', ...extra]);
  await fs.copyFile(PHOTO, path.join(dir, 'astronaut.jpg'));
  for (const file of ['dynamo.onnx', 'dynamo.onnx.data', 'expected.json']) await fs.copyFile(path.join(PYTORCH_ONNX, file), path.join(dir, file));
  return dir;
}

/** The same app built by Vite, which resolves the package itself; its output is `dir`/dist. */
export async function builtViteApp() {
  const dir = await appWith(['index.html', 'app.js']);
  await fs.mkdir(path.join(dir, 'public'));
  await fs.copyFile(PHOTO, path.join(dir, 'public/astronaut.jpg'));
  const html = await fs.readFile(path.join(dir, 'index.html'), 'utf8');
  await fs.writeFile(path.join(dir, 'index.html'), html.replace(/ *<script type="importmap">.*<\/script>\n/, ''));
  await run(path.join(BIN, 'vite'), ['build', '--logLevel', 'warn'], { cwd: dir });
  return dir;
}

/** Opens `url` in Chromium and calls `window[fn](...args)` once the page's module has run. */
export async function inChromium(url, fn, ...args) {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = await collectErrors(page);
    await page.goto(url);
    await page.waitForFunction((name) => typeof window[name] === 'function', fn);
    const result = await page.evaluate(([name, rest]) => window[name](...rest), [fn, args]);
    if (errors.length) throw new Error(`Chromium's console: ${errors.join('; ')}`);
    return result;
  } finally {
    await browser.close();
  }
}

/** The same in Firefox ESR, through geckodriver. */
export async function inFirefox(url, fn, ...args) {
  const { call, session, close } = await firefoxSession(url);
  try {
    await call('POST', `${session}/timeouts`, { script: 120_000 });
    const script = `const [name, rest, done] = arguments;
      const wait = () => (typeof window[name] === 'function' ? window[name](...rest) : new Promise((r) => setTimeout(r, 50)).then(wait));
      wait().then((value) => done({ value }), (error) => done({ error: String(error?.stack ?? error) }));`;
    const { value, error } = await call('POST', `${session}/execute/async`, { script, args: [fn, args] });
    if (error) throw new Error(`Firefox: ${error}`);
    return value;
  } finally {
    await close();
  }
}

