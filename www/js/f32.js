// Numbers from Rust as people write them. The engine's options, metadata and scores are f32s;
// crossing into JavaScript they are widened to doubles, so Rust's 0.01 arrives as
// 0.009999999776482582 and would show so in a form field or a message. Each value that comes
// from the engine to be shown or edited passes through `withF32Decimals` where it crosses.

/**
 * `x` as the shortest decimal that reads back as the same f32 (0.009999999776482582 → 0.01),
 * as Rust prints an f32. Anything else is returned as it is: integers, non-finite numbers, and
 * doubles that are no f32 (which did not come from one). The result parses back to the very f32
 * `x` was, so sending it back to Rust changes nothing.
 */
export function f32Decimal(x) {
  if (typeof x !== 'number' || !Number.isFinite(x) || Number.isInteger(x) || Math.fround(x) !== x) return x;
  // Nine significant digits always identify an f32; fewer usually do.
  for (let digits = 1; digits < 9; digits++) {
    const decimal = Number(x.toPrecision(digits));
    if (Math.fround(decimal) === x) return decimal;
  }
  return Number(x.toPrecision(9));
}

/**
 * A copy of `value` (what serde-wasm-bindgen made of a Rust value: plain objects, arrays,
 * numbers, strings, booleans, null) with every number through `f32Decimal`. Typed arrays
 * (tensors, probabilities) are left as they are.
 */
export function withF32Decimals(value) {
  if (typeof value === 'number') return f32Decimal(value);
  if (Array.isArray(value)) return value.map(withF32Decimals);
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, withF32Decimals(item)]));
  }
  return value;
}
