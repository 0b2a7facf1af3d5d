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

/**
 * Captures for a calibration, `[{ expression, crop }]` (a face from `track` with the
 * expression the person was asked for will do), as `{ faces, labels }` for the engine.
 */
export function captureBytes(captures) {
  if (!Array.isArray(captures) || captures.length === 0) {
    throw new FerError('invalid-argument', 'calibrate takes an array of captures, [{ expression, crop }], a few seconds of each expression.');
  }
  const faces = new Uint8Array(captures.length * 2304);
  const labels = new Uint8Array(captures.length);
  captures.forEach(({ expression, crop } = {}, i) => {
    const label = EXPRESSIONS.indexOf(expression);
    if (label < 0) throw new FerError('invalid-argument', `Capture ${i}: expression is one of ${EXPRESSIONS.join(', ')}; got ${expression}.`);
    const bytes = bytesOf(crop);
    if (!bytes || bytes.length !== 2304) throw new FerError('invalid-argument', `Capture ${i}: crop is a 48x48 grey crop (2304 bytes), such as a tracked face's \`crop\`.`);
    faces.set(bytes, i * 2304);
    labels[i] = label;
  });
  return { faces, labels };
}

/** What a calibration gives the caller: its verdict, the new model's bytes and the figures. */
export function calibrationResult({ report, bytes }) {
  const accuracy = (pair) => pair && { before: pair.before.accuracy, after: pair.after.accuracy };
  return {
    accepted: report.verdict.accepted,
    reason: report.verdict.reason,
    model: bytes ? new Uint8Array(bytes) : null,
    heldOut: accuracy(report.held_out_accuracy),
    referenceFaces: { faces: report.reference_faces.faces, readPersonally: report.reference_faces.read_personally },
    report,
  };
}
