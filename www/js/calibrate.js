// "Calibrate to my face": the page asks for each expression in turn (its name, a hint, a
// countdown, then a few seconds of capture), keeps the 48x48 crops the camera worker cut from
// the one face in view, lets the user review them, then calibrates the current model to them
// through the library's `calibrate` (www/lib/, in its worker). When that helps, the result is
// the "Calibrated to you" model in the Model menu, kept with its captures in IndexedDB
// (personal-store.js) until the user deletes both; when it does not, the page says why and
// the current model stays.
//
// The captures come from the camera section's 'camera-faces' events; the expression being
// asked for is in #calibrate's data-expression while it is asked (the tests' fake camera
// reads it, as a person reads the screen).
import { EXPRESSIONS } from '../lib/index.js';
import { faceCanvas, facePixels } from './faces.js';
import { Captures, personalStore } from './personal-store.js';

const PERSONAL_ID = 'personal';
const PERSONAL_LABEL = 'Calibrated to you';
const COUNTDOWN_SECONDS = 3;
const CAPTURE_MS = 3000;
// Neighbouring video frames are near copies: more than this many a second adds little but
// time to the fine-tuning.
const MAX_CAPTURES_PER_SECOND = 8;
// An expression needs two captures for one to be held out to score the fit.
const MIN_CAPTURES_TO_SCORE = 2;
// How to pose each expression, by the name the engine gives it.
const HINTS = {
  Angry: 'Lower your brows and pull them together, press your lips tight, glare.',
  Disgust: 'Wrinkle your nose and raise your upper lip, as at a bad smell.',
  Fear: 'Raise your brows and pull them together, open your eyes wide, stretch your lips back.',
  Happy: 'Smile broadly, with your cheeks and your eyes.',
  Sad: 'Raise the inner ends of your brows, turn the corners of your mouth down.',
  Surprise: 'Raise your brows high, open your eyes wide, drop your jaw.',
  Neutral: 'Relax your face and look straight at the camera.',
};

const $ = (selector) => document.querySelector(selector);
const percent = (share) => `${(100 * share).toFixed(1)}%`;

function show(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

class Cancelled extends Error {}

/**
 * Wires up #calibrate. `camera` is the camera section (its events), `recognizer` the library's
 * recognizer the camera runs (null when it could not start), `fer` the engine's exports.
 */
export async function setupCalibration({ fer, recognizer, registry, camera }) {
  const emotions = fer.emotions();
  const panel = $('#calibrate');
  const startButton = $('#calibrate-start');
  const reviewButton = $('#calibrate-review-open');
  const deleteButton = $('#calibrate-delete');
  const prompt = $('#calibrate-prompt');
  const review = $('#calibrate-review');
  const fitButton = $('#calibrate-fit');
  const result = $('#calibrate-result');
  const error = $('#calibrate-error');
  const progress = $('#calibrate-progress');

  let captures = null; // the captures under review or last fitted
  let keptCaptures = false; // whether IndexedDB holds captures (and a model)
  let cancel = null; // aborts the capture in progress

  const setStep = (step) => {
    panel.dataset.step = step;
    prompt.hidden = !['countdown', 'capture'].includes(step);
    review.hidden = step !== 'review';
    startButton.disabled = !['idle', 'review'].includes(step) || camera.dataset.state === 'crashed' || camera.dataset.state === 'unavailable';
    reviewButton.hidden = !(captures?.total && ['idle'].includes(step));
    deleteButton.hidden = !keptCaptures;
    deleteButton.disabled = step === 'fitting';
    if (!['countdown', 'capture'].includes(step)) delete panel.dataset.expression;
  };

  camera.addEventListener('camera-state', () => setStep(panel.dataset.step));

  /** Resolves once the camera is on, starting it if it is off; rejects when it cannot start. */
  function cameraOn() {
    if (camera.dataset.state === 'on') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onState = ({ detail: { state } }) => {
        if (['asking', 'starting'].includes(state)) return;
        camera.removeEventListener('camera-state', onState);
        if (state === 'on') resolve();
        else reject(new Error(`The camera did not start: ${$('#camera-status').textContent}`));
      };
      camera.addEventListener('camera-state', onState);
      if (!['asking', 'starting'].includes(camera.dataset.state)) $('#camera-start').click();
    });
  }

  const wait = (ms, signal) => new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new Cancelled());
    }, { once: true });
  });

  /** Asks for expression `label` and adds its captures to `into`. */
  async function captureExpression(label, into, signal, position) {
    panel.dataset.expression = String(label);
    $('#calibrate-step').textContent = position;
    $('#calibrate-name').textContent = emotions[label];
    $('#calibrate-hint').textContent = HINTS[emotions[label]] ?? 'Pose this expression for the camera.';
    const bar = $('#calibrate-capture-bar');
    const status = $('#calibrate-capture-status');
    const countdown = $('#calibrate-countdown');
    bar.value = 0;
    setStep('countdown');
    for (let s = COUNTDOWN_SECONDS; s > 0; s--) {
      countdown.textContent = `Get ready… ${s}`;
      status.textContent = '';
      await wait(1000, signal);
    }
    countdown.textContent = 'Hold it!';
    setStep('capture');
    const skipped = { noFace: 0, several: 0 };
    let taken = 0;
    await new Promise((resolve, reject) => {
      const started = performance.now();
      let lastTaken = -Infinity;
      const finish = (outcome) => {
        camera.removeEventListener('camera-faces', onFaces);
        camera.removeEventListener('camera-state', onState);
        outcome();
      };
      // The library reports a video's faces once seen in a few frames in a row.
      const onFaces = ({ detail: { faces } }) => {
        const now = performance.now();
        if (faces.length > 1) skipped.several += 1;
        else if (faces.length === 0) skipped.noFace += 1;
        else if (now - lastTaken >= 1000 / MAX_CAPTURES_PER_SECOND) {
          lastTaken = now;
          into.add(label, faces[0].crop);
          taken += 1;
        }
        bar.value = Math.min(1, (now - started) / CAPTURE_MS);
        status.textContent = `${taken} captured` +
          (skipped.noFace ? ` · ${skipped.noFace} frame${skipped.noFace === 1 ? '' : 's'} skipped: no face (or not yet steady)` : '') +
          (skipped.several ? ` · ${skipped.several} skipped: more than one face in view` : '');
        Object.assign(panel.dataset, { captured: taken, skippedNoFace: skipped.noFace, skippedSeveral: skipped.several });
        if (now - started >= CAPTURE_MS) finish(resolve);
      };
      const onState = ({ detail: { state } }) => {
        if (state !== 'on') finish(() => reject(new Error('The camera stopped during the capture: start it again and redo this expression.')));
      };
      signal.addEventListener('abort', () => finish(() => reject(new Cancelled())), { once: true });
      camera.addEventListener('camera-faces', onFaces);
      camera.addEventListener('camera-state', onState);
    });
  }

  /** Captures `labels` in turn into `into`; resolves to false when cancelled. */
  async function captureAll(labels, into) {
    show(error, '');
    const controller = new AbortController();
    cancel = () => controller.abort();
    try {
      setStep('countdown');
      $('#calibrate-step').textContent = '';
      $('#calibrate-name').textContent = '';
      $('#calibrate-hint').textContent = '';
      $('#calibrate-countdown').textContent = 'Starting the camera…';
      await cameraOn();
      for (const [i, label] of labels.entries()) {
        await captureExpression(label, into, controller.signal, labels.length > 1 ? `${i + 1} of ${labels.length}:` : 'Again:');
      }
      return true;
    } catch (failure) {
      if (!(failure instanceof Cancelled)) show(error, failure.message);
      return false;
    } finally {
      cancel = null;
    }
  }

  startButton.addEventListener('click', async () => {
    const fresh = new Captures(emotions.length);
    result.textContent = '';
    if (await captureAll(emotions.map((_, label) => label), fresh)) {
      captures = fresh;
      openReview();
    } else {
      setStep('idle');
    }
  });
  $('#calibrate-cancel').addEventListener('click', () => cancel?.());
  reviewButton.addEventListener('click', openReview);
  $('#calibrate-discard').addEventListener('click', () => {
    if (!keptCaptures) captures = null;
    setStep('idle');
  });

  function openReview() {
    renderReview();
    setStep('review');
  }

  function renderReview() {
    const list = $('#calibrate-review-list');
    list.replaceChildren(...emotions.map((emotion, label) => {
      const row = document.createElement('div');
      row.className = 'emotion-row calibrate-row';
      row.dataset.label = String(label);
      const heading = document.createElement('h3');
      const n = captures.count(label);
      heading.textContent = `${emotion} `;
      heading.append(Object.assign(document.createElement('small'), {
        textContent: n ? `${n} capture${n === 1 ? '' : 's'}` : 'skipped',
      }));
      const strip = document.createElement('div');
      strip.className = 'face-strip';
      captures.byClass[label].forEach((face, index) => {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'face-button calibrate-capture';
        button.title = `Delete this capture of ${emotion}`;
        button.append(faceCanvas(face));
        button.addEventListener('click', () => {
          captures.remove(label, index);
          renderReview();
        });
        strip.append(button);
      });
      const redo = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Redo', className: 'calibrate-redo' });
      redo.addEventListener('click', async () => {
        const again = new Captures(emotions.length);
        if (await captureAll([label], again)) {
          captures.clear(label);
          again.byClass[label].forEach((face) => captures.add(label, face));
        }
        openReview();
      });
      const skip = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Skip', className: 'calibrate-skip' });
      skip.title = `Leave ${emotion} out of the calibration`;
      skip.disabled = n === 0;
      skip.addEventListener('click', () => {
        captures.clear(label);
        renderReview();
      });
      row.append(heading, strip, redo, skip);
      return row;
    }));
    const scored = emotions.filter((_, label) => captures.count(label) >= MIN_CAPTURES_TO_SCORE).length;
    const present = emotions.filter((_, label) => captures.count(label) > 0).length;
    fitButton.disabled = present < 2;
    fitButton.title = present < 2 ? 'Capture at least two expressions to calibrate' : '';
    panel.dataset.captures = String(captures.total);
    $('#calibrate-review-note').textContent = present < 2
      ? 'Capture at least two expressions: the calibration learns to tell them apart.'
      : scored < present ? `Expressions with fewer than ${MIN_CAPTURES_TO_SCORE} captures are fitted but not scored.` : '';
  }

  fitButton.addEventListener('click', fit);

  function showProgress({ phase, done, total }, seconds) {
    // Reading the faces (a forward pass per view of each capture) takes most of the time.
    const share = phase === 'features' ? 0.9 * (done / total) : 0.9 + 0.1 * (done / total);
    $('#calibrate-fit-bar').value = share;
    $('#calibrate-fit-status').textContent = phase === 'features'
      ? `Reading the faces: ${done.toLocaleString('en')} of ${total.toLocaleString('en')} · ${seconds.toFixed(1)} s`
      : `Fitting: pass ${done} of ${total} · ${seconds.toFixed(1)} s`;
  }

  async function fit() {
    // Calibrating a calibrated model starts again from the weights it was calibrated from, so
    // the camera's model is the base either way.
    const baseLabel = registry.currentId === PERSONAL_ID ? (await personalStore.load().catch(() => null))?.baseLabel ?? registry.currentLabel() : registry.currentLabel();
    if (!recognizer) {
      show(error, 'The calibration needs the face finder, which could not start: reload the page.');
      return;
    }
    const { faces, labels } = captures.toArrays();
    const list = Array.from(labels, (label, i) => ({ expression: EXPRESSIONS[label], crop: faces.subarray(i * 2304, (i + 1) * 2304) }));
    show(error, '');
    result.textContent = '';
    setStep('fitting');
    // The fine-tuning wants every core: the camera stops meanwhile (its light goes off too)
    // and starts again after.
    const cameraWasOn = camera.dataset.state === 'on';
    if (cameraWasOn) $('#camera-stop').click();
    progress.hidden = false;
    $('#calibrate-fit-bar').value = 0;
    $('#calibrate-fit-status').textContent = `Calibrating "${baseLabel}" to ${captures.total} captures…`;
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    let outcome;
    try {
      outcome = await recognizer.calibrate(list, { onProgress: (step) => showProgress(step, seconds()) });
    } catch (failure) {
      progress.hidden = true;
      show(error, `The calibration failed: ${failure.message}. Your captures are kept: try again, or redo the expressions that look wrong.`);
      openReview();
      return;
    } finally {
      if (cameraWasOn) $('#camera-start').click();
    }
    progress.hidden = true;
    const took = seconds();
    const { report } = outcome;
    panel.dataset.accepted = String(outcome.accepted);
    if (!outcome.accepted) {
      // Honest about it: the figures, the reason, and the model in use unchanged.
      showResult({ report, seconds: took, threads: recognizer.threads, baseLabel }, { kept: false, refused: outcome.reason });
      setStep('idle');
      return;
    }
    registry.add(PERSONAL_ID, PERSONAL_LABEL, fer.Model.fromBytes(outcome.model));
    registry.rememberSelected(PERSONAL_ID);
    let kept = true;
    try {
      await personalStore.save({ modelBytes: outcome.model, faces, labels, report, seconds: took, threads: recognizer.threads, baseLabel });
    } catch {
      kept = false;
    }
    keptCaptures = kept;
    showResult({ report, seconds: took, threads: recognizer.threads, baseLabel }, { kept });
    setStep('idle');
  }

  function showResult({ report, seconds, threads, baseLabel, savedAt }, { kept, inUse = true, refused = null }) {
    const when = savedAt ? `Kept from ${new Date(savedAt).toLocaleString()}: ` : '';
    const onThreads = threads ? ` on ${threads} thread${threads === 1 ? '' : 's'}` : '';
    const parts = refused
      ? [`Calibrating "${baseLabel}" did not help (${seconds.toFixed(1)} s${onThreads}), so "${registry.currentLabel()}" stays in use: ${refused}.`]
      : [`${when}"${PERSONAL_LABEL}" calibrated from "${baseLabel}" in ${seconds.toFixed(1)} s${onThreads}` +
        (inUse ? ', and in use.' : '; choose it in the Model menu to use it.')];
    const heldOut = report.held_out_accuracy;
    if (heldOut) {
      parts.push(`Your held-out captures (${heldOut.before.n}): ${percent(heldOut.before.accuracy)} right before, ${percent(heldOut.after.accuracy)} after.`);
      Object.assign(panel.dataset, { heldOutBefore: heldOut.before.accuracy, heldOutAfter: heldOut.after.accuracy, heldOutN: heldOut.before.n });
    } else {
      parts.push(`Too few captures to score it: an expression needs ${MIN_CAPTURES_TO_SCORE} or more.`);
    }
    // What it can cost on other people's faces: the share of the reference faces shipped with
    // the library that the personal weights would read (every other face reads as before).
    const { faces: referenceFaces, read_personally: readPersonally } = report.reference_faces;
    parts.push(`Other people’s faces (${referenceFaces} reference faces): ${percent(readPersonally)} would be read by your calibration, ` +
      `so it can cost at most ${percent(readPersonally)} there; every other face is read as before.`);
    Object.assign(panel.dataset, { referenceFaces, referenceReadPersonally: readPersonally });
    if (!kept && !refused) parts.push('This browser does not let the page store it: download it (Keep the model) to keep it.');
    result.textContent = parts.join(' ');
    panel.dataset.seconds = seconds.toFixed(2);
  }

  deleteButton.addEventListener('click', async () => {
    try {
      await personalStore.clear();
    } catch (failure) {
      show(error, `Could not delete your captures and model from this browser: ${failure.message ?? failure}. ` +
        'Clear this site’s data in the browser’s settings to remove them.');
      return;
    }
    registry.remove(PERSONAL_ID);
    captures = null;
    keptCaptures = false;
    result.textContent = 'Your captures and your calibrated model are deleted from this browser.';
    show(error, '');
    setStep('idle');
  });

  // Back from an earlier visit: the model in the menu (in use if it was), the captures to review.
  try {
    const saved = await personalStore.load();
    if (saved) {
      const model = fer.Model.fromBytes(saved.modelBytes);
      registry.add(PERSONAL_ID, PERSONAL_LABEL, model, { select: (await registry.lastSelected()) === PERSONAL_ID });
      captures = Captures.fromArrays(emotions.length, saved.faces, saved.labels, facePixels());
      keptCaptures = true;
      showResult(saved, { kept: true, inUse: registry.currentId === PERSONAL_ID });
    }
  } catch (failure) {
    show(error, `Your calibrated model from an earlier visit does not load (${failure.message ?? failure}): ` +
      'delete it and calibrate again.');
    keptCaptures = true;
  }
  setStep('idle');
}
