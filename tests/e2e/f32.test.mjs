// The page's f32 helper (www/js/f32.js), in Node: numbers from Rust read as people write them
// and still parse back to the same f32.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { f32Decimal, withF32Decimals } from '../../www/js/f32.js';

const widened = (x) => Math.fround(x); // an f32 as wasm-bindgen hands it to JavaScript

test('an f32 widened to a double reads as the shortest decimal of that f32', () => {
  assert.equal(widened(0.01), 0.009999999776482582);
  assert.equal(String(f32Decimal(widened(0.01))), '0.01');
  assert.equal(String(f32Decimal(widened(0.001))), '0.001');
  assert.equal(String(f32Decimal(widened(5e-4))), '0.0005');
  assert.equal(String(f32Decimal(widened(0.1))), '0.1');
  assert.equal(String(f32Decimal(widened(1e-8))), '1e-8');
  assert.equal(String(f32Decimal(widened(0.999))), '0.999');
  assert.equal(String(f32Decimal(widened(-2.5))), '-2.5');
  assert.equal(String(f32Decimal(widened(0.6924))), '0.6924');
  assert.equal(String(f32Decimal(widened(1 / 3))), '0.33333334');
});

test('every fractional f32 comes back as itself, in at most nine digits', () => {
  const bits = new Uint32Array(1);
  const f32 = new Float32Array(bits.buffer);
  let state = 12345;
  for (let i = 0; i < 100_000; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0; // any 32-bit pattern
    bits[0] = state;
    const x = f32[0];
    if (!Number.isFinite(x) || Number.isInteger(x)) continue; // integers are left alone (below)
    const decimal = f32Decimal(x);
    assert.equal(Math.fround(decimal), x, `bits ${state.toString(16)}`);
    assert.ok(decimal.toExponential().replace(/^-/, '').replace(/e.*$/, '').replace('.', '').length <= 9, `${x} → ${decimal}`);
  }
});

// An integer may be a u64 (a seed): the f32 nearest a shorter decimal would change it.
test('integers, non-finite numbers and doubles that are no f32 are left alone', () => {
  for (const x of [0, 3, -7, 2 ** 30, 2 ** 40 + 1, Infinity, -Infinity, NaN, 0.1, 1 / 3, 0.009999999776482583]) {
    assert.ok(Object.is(f32Decimal(x), x), String(x));
  }
});

test('a value from Rust has each of its numbers rounded, and keeps its shape', () => {
  const probabilities = new Float32Array([0.1, 0.9]);
  const options = {
    name: 'fast',
    recipe: { limit: null, config: { lr: widened(0.01), epochs: 18, optimizer: { type: 'sgd', momentum: widened(0.9) }, augment: null } },
    per_class: [widened(0.25), widened(0.3)],
    flags: [true, false],
    probabilities,
  };
  const readable = withF32Decimals(options);
  assert.deepEqual(readable, {
    name: 'fast',
    recipe: { limit: null, config: { lr: 0.01, epochs: 18, optimizer: { type: 'sgd', momentum: 0.9 }, augment: null } },
    per_class: [0.25, 0.3],
    flags: [true, false],
    probabilities,
  });
  assert.equal(readable.probabilities, probabilities, 'typed arrays are not copied');
  assert.equal(options.recipe.config.lr, widened(0.01), 'the original is unchanged');
});
