// What the browser and Node entries share: the class order and the error type.

/** The seven expressions in the order of every probability array: FER2013's class order. */
export const EXPRESSIONS = Object.freeze(['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']);

/**
 * Every error the library throws or rejects with: `code` is stable, for code to branch on;
 * the message says what happened and what to do about it.
 */
export class FerError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'FerError';
    this.code = code;
  }
}

export const messageOf = (error) => error?.message ?? String(error);

/** Bytes of a model given as bytes; null for anything else. */
export function bytesOf(value) {
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

/** `probabilities` (7 numbers in EXPRESSIONS' order) as `{ angry, disgust, … }`. */
export function byExpression(probabilities) {
  return Object.fromEntries(EXPRESSIONS.map((name, k) => [name, probabilities[k]]));
}

/** Checks `crops48` (n 48x48 grey crops laid end to end) and returns them as bytes. */
export function cropBytes(crops48) {
  const bytes = bytesOf(crops48);
  if (!bytes || bytes.length === 0 || bytes.length % 2304 !== 0) {
    const got = bytes ? `${bytes.length} bytes` : typeof crops48;
    throw new FerError('invalid-argument', `classify takes 48x48 grey crops laid end to end (a Uint8Array of n × 2304 bytes); got ${got}.`);
  }
  return bytes;
}
