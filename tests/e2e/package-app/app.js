// An app that installed the fer-cnn package, as a web developer writes one: the same file runs
// in the plain static page (an import map resolves 'fer-cnn') and in the Vite app (Vite does).
// package.test.mjs calls the functions it leaves on `window`.
import { EXPRESSIONS, FerError, load } from 'fer-cnn';

const photo = () => document.querySelector('#photo');
const summary = ({ crop, ...face }) => ({ ...face, cropBytes: crop.length });

/** The faces of the photo, the time from `load` to the first result, and an error's code. */
window.detectPhoto = async () => {
  const started = performance.now();
  const fer = await load({ model: 'fast' });
  await photo().decode();
  const faces = await fer.detect(photo());
  const firstResultMs = performance.now() - started;
  const bad = await fer.detect('not an image').then(() => null, (error) => ({ isFerError: error instanceof FerError, code: error.code, message: error.message }));
  // Checked here: key order does not survive every test driver's JSON.
  const keysInOrder = faces.every((face) => Object.keys(face.probabilities).join() === EXPRESSIONS.join());
  const info = { threads: fer.threads, model: fer.model, expressions: [...EXPRESSIONS], keysInOrder };
  fer.dispose();
  const afterDispose = await fer.classify(new Uint8Array(2304)).then(() => null, (error) => error.code);
  return { faces: faces.map(summary), firstResultMs, bad, info, afterDispose, isolated: self.crossOriginIsolated };
};

/** RGBA pixels of the photo as drawn on a canvas, with what detect makes of them here. */
window.detectPixels = async () => {
  await photo().decode();
  const canvas = document.createElement('canvas');
  canvas.width = photo().naturalWidth;
  canvas.height = photo().naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(photo(), 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const fer = await load({ model: 'fast' });
  const faces = await fer.detect(pixels);
  const probabilities = await fer.classify(faces[0].crop);
  fer.dispose();
  return {
    width: pixels.width, height: pixels.height, rgba: Array.from(pixels.data),
    faces: faces.map(summary), crop: Array.from(faces[0].crop), probabilities: Array.from(probabilities),
  };
};

/**
 * Tracks a camera for `frames` frames: a MediaStream of the photo drawn on a canvas 30 times a
 * second (the camera of a headless browser), in a <video> as getUserMedia's stream would be.
 * Resolves to each frame's face ids and expressions.
 */
window.trackCamera = async (frames) => {
  await photo().decode();
  const canvas = document.createElement('canvas');
  canvas.width = 640;
  canvas.height = 480;
  const context = canvas.getContext('2d');
  const draw = () => context.drawImage(photo(), 0, 0, canvas.width, canvas.height);
  draw();
  const painter = setInterval(draw, 33);
  const video = document.createElement('video');
  video.muted = true;
  video.srcObject = canvas.captureStream(30);
  document.body.append(video);
  await video.play();
  const fer = await load({ model: 'fast' });
  const seen = [];
  const totals = [];
  const stages = [];
  await new Promise((resolve) => {
    const stop = fer.track(video, (faces, frame) => {
      if (faces.length === 0) return;
      seen.push(faces.map((face) => ({ id: face.id, expression: face.expression })));
      totals.push(frame.timings.totalMs);
      stages.push(frame.timings);
      if (seen.length >= frames) {
        stop();
        resolve();
      }
    });
  });
  clearInterval(painter);
  const threads = fer.threads;
  fer.dispose();
  return { seen, totals, stages, threads };
};

/** Milliseconds of each of `calls` detect calls on the photo, after two to warm up. */
window.timeDetect = async (calls, model = 'fast') => {
  await photo().decode();
  const fer = await load({ model });
  for (let i = 0; i < 2; i++) await fer.detect(photo());
  const ms = [];
  for (let i = 0; i < calls; i++) {
    const started = performance.now();
    await fer.detect(photo());
    ms.push(performance.now() - started);
  }
  const threads = fer.threads;
  fer.dispose();
  return { ms, threads };
};

/**
 * PyTorch 2's default ONNX export, a graph and its weights file: loaded together they give
 * PyTorch's probabilities; the graph alone is refused with a sentence naming the other file.
 */
window.loadPyTorchExport = async () => {
  const bytes = async (file) => new Uint8Array(await (await fetch(file)).arrayBuffer());
  const [graph, data, expected] = await Promise.all([bytes('./dynamo.onnx'), bytes('./dynamo.onnx.data'), fetch('./expected.json').then((r) => r.json())]);
  const alone = await load({ model: graph }).then((fer) => { fer.dispose(); return null; }, (error) => ({ code: error.code, message: error.message }));
  const fer = await load({ model: { graph, data, dataName: 'dynamo.onnx.data' } });
  const probabilities = await fer.classify(Uint8Array.from(expected.faces.flat()));
  const maxDifference = Math.max(...expected.probabilities.flat().map((p, i) => Math.abs(p - probabilities[i])));
  const model = fer.model;
  fer.dispose();
  return { alone, maxDifference, model };
};

/**
 * Calibrations that cannot help: the photo's face with noise, labelled with expressions at
 * random, so no fit reads the held-out captures better. The current model must stay, with a
 * reason; a capture without a crop is refused with its index.
 */
window.calibrateNoise = async () => {
  await photo().decode();
  const fer = await load({ model: 'fast' });
  const [face] = await fer.detect(photo());
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const captures = Array.from({ length: 56 }, () => ({
    expression: EXPRESSIONS[Math.floor(random() * 7)],
    crop: face.crop.map((grey) => Math.max(0, Math.min(255, grey + Math.round(24 * (random() - 0.5))))),
  }));
  const phases = new Set();
  const result = await fer.calibrate(captures, { onProgress: ({ phase }) => phases.add(phase) });
  const refused = await fer.calibrate([{ expression: 'happy' }]).then(() => null, (error) => ({ code: error.code, message: error.message }));
  fer.dispose();
  return { accepted: result.accepted, reason: result.reason, model: result.model, heldOut: result.heldOut, referenceFaces: result.referenceFaces, phases: [...phases], refused };
};

/**
 * Calibrates `model` ('fast' or 'default') to one "person": captures of FER2013 faces seen through a shift,
 * `{ faces, labels }` each set (faces: arrays of 2304 grey levels). Resolves to the accuracies
 * before and after on the held-out captures (the library's own split), on other faces under
 * the same shift (fresh), and on the captures and the fresh faces without it.
 */
window.calibrateShifted = async ({ captures, capturesUnshifted, fresh, freshUnshifted }, model = 'fast') => {
  const fer = await load({ model });
  const accuracy = async ({ faces, labels }) => {
    const probabilities = await fer.classify(Uint8Array.from(faces.flat()));
    let right = 0;
    labels.forEach((label, i) => {
      const row = probabilities.subarray(7 * i, 7 * i + 7);
      if (row.indexOf(Math.max(...row)) === label) right += 1;
    });
    return right / labels.length;
  };
  const measure = async () => ({
    fresh: await accuracy(fresh),
    capturesUnshifted: await accuracy(capturesUnshifted),
    freshUnshifted: await accuracy(freshUnshifted),
  });
  const before = await measure();
  const list = captures.labels.map((label, i) => ({ expression: EXPRESSIONS[label], crop: Uint8Array.from(captures.faces[i]) }));
  const started = performance.now();
  const result = await fer.calibrate(list);
  const seconds = (performance.now() - started) / 1000;
  let after = null;
  if (result.accepted) {
    await fer.setModel(result.model);
    after = await measure();
  }
  fer.dispose();
  return { before, after, accepted: result.accepted, reason: result.reason, heldOut: result.heldOut, referenceFaces: result.referenceFaces, seconds, modelBytes: result.model?.length ?? 0 };
};
