// The page starts: the wasm engine loads, the default model loads, no console errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withBrowser, openPage } from './harness.mjs';

test('the page loads the engine and the default model without errors', () => withBrowser([], async ({ server, browser }) => {
  const { page, errors } = await openPage(browser, server.url);
  assert.match(await page.textContent('#version'), /fer-cnn \d+\.\d+\.\d+/);
  assert.match(await page.textContent('#model-info'), /parameters/);
  assert.deepEqual(errors, []);
}));
