// The page starts: the wasm engine loads, the default model loads, no console errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch, collectErrors } from './harness.mjs';

test('the page loads the engine and the default model without errors', async () => {
  const server = await serve();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = collectErrors(page);
    await page.goto(server.url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    assert.match(await page.textContent('#version'), /fer-cnn \d+\.\d+\.\d+/);
    assert.match(await page.textContent('#model-info'), /parameters/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.close();
  }
});
