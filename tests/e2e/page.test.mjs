// The page starts: the wasm engine loads, the default model loads, no console errors; in a
// browser whose language Intl rejects too; and where a part of it fails to load or to run, it
// says what failed and what to do instead of "Loading the engine…" for ever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withBrowser, openPage, collectErrors } from './harness.mjs';

test('the page loads the engine and the default model without errors', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  assert.match(await page.textContent('#version'), /fer-cnn \d+\.\d+\.\d+/);
  assert.match(await page.textContent('#model-info'), /parameters/);
  assert.deepEqual(errors, []);
}));

test('a browser language that Intl rejects ("C", from LANG=C) does not stop the page', () => withBrowser([], async ({ server, browser }) => {
  const context = await browser.newContext();
  // As a browser on a POSIX locale reports it (Playwright's `locale` option refuses "C").
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'language', { configurable: true, get: () => 'C' });
    Object.defineProperty(Navigator.prototype, 'languages', { configurable: true, get: () => ['C'] });
  });
  const { page, errors } = await openPage(context, server.url);
  assert.equal(await page.evaluate(() => {
    try {
      new Intl.NumberFormat('C');
      return 'accepted';
    } catch (error) {
      return error.name;
    }
  }), 'RangeError', 'Intl rejects the language');
  assert.equal(await page.textContent('#engine-status'), 'Ready');
  assert.equal(await page.$$eval('.chart .uplot', (charts) => charts.length), 2, 'both charts are drawn');
  assert.deepEqual(errors, []);
}));

/** Opens the page with `path` answered by `fulfil` (Playwright's route.fulfill options); resolves to
 * the status line's text once the page says it could not start. */
async function startWith(browser, url, path, fulfil) {
  const page = await browser.newPage();
  await collectErrors(page); // the failure is reported to the console too: not checked here
  await page.route(`**/${path}`, (route) => route.fulfill(fulfil));
  await page.goto(url);
  await page.waitForSelector('body[data-start-failed="true"]', { timeout: 30_000 });
  assert.equal(await page.getAttribute('body', 'data-ready'), null);
  assert.equal(await page.isVisible('#engine-status'), true);
  assert.equal(await page.getAttribute('#engine-status', 'role'), 'alert');
  const text = await page.textContent('#engine-status');
  await page.close();
  return text;
}

test('a module that does not load, or does not run, is named in a message instead of "Loading the engine…"', () => withBrowser([], async ({ server, browser }) => {
  assert.match(
    await startWith(browser, server.url, 'js/charts.js', { status: 404, contentType: 'text/plain', body: 'not found' }),
    /^The page could not start: js\/charts\.js \(HTTP 404\) did not load\. Check the connection and reload the page; if this comes back, the site is missing some of its files\.$/,
  );
  assert.match(
    await startWith(browser, server.url, 'js/charts.js', { status: 200, contentType: 'text/javascript', body: 'export const = 1;' }),
    /^The page could not start: .*SyntaxError.* in js\/charts\.js\. Reload the page; if this comes back, try an up-to-date Chrome, Edge, Firefox or Safari\.$/,
  );
  assert.match(
    await startWith(browser, server.url, 'js/charts.js', { status: 200, contentType: 'text/javascript', body: 'throw new Error("no charts today");\nexport class LearningChart {}' }),
    /^The page could not start: .*no charts today in js\/charts\.js\. Reload the page/,
  );
  // After the modules have loaded: a failure of app.js's start-up (here the first model missing).
  assert.match(
    await startWith(browser, server.url, 'models/fast.safetensors', { status: 404, contentType: 'text/plain', body: 'not found' }),
    /^The page could not start: the fast model \(models\/fast\.safetensors\) is missing \(HTTP 404\)\. Reload the page/,
  );
}));
