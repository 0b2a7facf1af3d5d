// The camera section: live video (or a dropped photo) → the library's `track` and `detect`
// (www/lib/, the same package an app installs) → boxes with labels over the picture, the 48x48
// crop each face gives the model, seven smoothed probability bars, frames/s and milliseconds
// per stage. All wasm work happens in the library's worker; it restarts that worker after a
// crash (re-sending the detector, the model and the mirror setting), and gives up when it
// keeps crashing.
//
// Nothing breaks the tab: while the tab is hidden the browser sends no video frames (the
// camera stays open, and tracking goes on where it is when the tab is shown again).
//
// The section dispatches 'camera-state' ({state}) and, for each video frame, 'camera-faces'
// ({faces}: the library's faces), which the calibration (calibrate.js) takes its captures from.
import { EXPRESSIONS, load } from '../lib/index.js';
import { FIRST_MODEL, PHOTO_MODEL } from './models.js';

const STATE_MESSAGES = {
  off: 'Camera off. Start it, or drop a photo here, to see what the model sees.',
  asking: 'Asking for the camera… allow it in the browser’s prompt.',
  starting: 'Camera allowed, starting the video…',
  on: 'Camera on. Nothing leaves this tab.',
  denied: 'The camera is blocked for this page. To allow it, click the camera or lock icon in the ' +
    'address bar, set Camera to Allow, then press Start camera again.',
  'no-camera': 'No camera found. Connect one (or close the app that holds it) and press Start camera again, or drop a photo.',
  busy: 'The camera is in use by another app, or could not start. Close that app and press Start camera again.',
  insecure: 'The camera needs a secure page (https:// or http://localhost). A photo still works.',
  lost: 'The camera stopped (unplugged, taken by another app, or its permission withdrawn). Press Start camera to try again.',
  photo: 'Photo classified. Start the camera to go back to live video.',
  failed: 'Could not classify the frame.',
  crashed: 'The face finder stopped working, so the camera and photos are off. Reload the page to start it again.',
};

// Photos are shown at most this wide and high (the library scales what it classifies itself).
const MAX_PHOTO_SIDE = 1280;
const FACE_COLOURS = ['#3a6df0', '#e0692f', '#2fa36b', '#b23ad0'];

function describeError(error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'no-camera';
    default:
      return 'busy';
  }
}


function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One face's card: its enlarged 48x48 crop, its top emotion and seven bars. */
class FaceCard {
  constructor(index, emotions, cropSide) {
    this.root = element('figure', 'camera-face');
    this.root.style.setProperty('--face-colour', FACE_COLOURS[index]);
    this.root.hidden = true;
    this.canvas = element('canvas', 'camera-crop');
    this.canvas.width = this.canvas.height = cropSide;
    this.canvas.setAttribute('aria-label', `Face ${index + 1} as the model sees it (48×48 grey)`);
    this.context = this.canvas.getContext('2d');
    this.pixels = this.context.createImageData(cropSide, cropSide);
    this.caption = element('figcaption', 'camera-face-label');
    const bars = element('div', 'camera-bars');
    this.bars = emotions.map((emotion) => {
      const fill = element('span', 'camera-bar-fill');
      const track = element('span', 'camera-bar-track');
      const value = element('span', 'camera-bar-value');
      track.append(fill);
      const row = element('div', 'camera-bar');
      row.append(element('span', 'camera-bar-name', emotion), track, value);
      bars.append(row);
      return { fill, value };
    });
    this.root.append(this.canvas, this.caption, bars);
  }

  /** `face`: one of the library's faces; its `expression` is the label the tracks hold (not always the top bar). */
  show(index, face, emotions) {
    const rgba = this.pixels.data;
    face.crop.forEach((grey, i) => {
      rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = grey;
      rgba[4 * i + 3] = 255;
    });
    this.context.putImageData(this.pixels, 0, 0);
    const probs = EXPRESSIONS.map((name) => face.probabilities[name]);
    probs.forEach((p, k) => {
      this.bars[k].fill.style.width = `${(100 * p).toFixed(1)}%`;
      this.bars[k].value.textContent = `${Math.round(100 * p)}%`;
    });
    const label = EXPRESSIONS.indexOf(face.expression);
    const doubt = face.uncertain ? ' (uncertain)' : '';
    const flags = face.quality.flags.length ? ` · ${face.quality.flags.join(', ')}` : '';
    this.caption.textContent = `Face ${index + 1}: ${emotions[label]} ${Math.round(100 * face.score)}%${doubt}${flags}`;
    this.root.dataset.probs = probs.join(',');
    this.root.dataset.label = String(label);
    this.root.dataset.id = String(face.id);
    this.root.hidden = false;
  }
}

/**
 * Fills `section` and runs it. `registry` is the ModelRegistry whose current model classifies
 * the faces (the library's worker holds a copy of it). Resolves to the library's recognizer
 * (calibration uses it too), or null when the camera could not start.
 */
export async function setupCamera({ section, registry, emotions, layout }) {
  try {
    return await runCamera({ section, registry, emotions, layout });
  } catch (error) {
    // The rest of the page keeps working without the camera.
    section.dataset.state = 'unavailable';
    const status = section.querySelector('#camera-status');
    status.textContent = `The face finder could not start: ${error.message ?? error}`;
    status.classList.add('error');
    return null;
  }
}

/** The registry's current model as a file for the library, at the precision it was stored in (int8 files are classified in integer arithmetic). */
function currentModelBytes(registry) {
  const model = registry.current();
  return model.toBytes(model.storedPrecision());
}

async function runCamera({ section, registry, emotions, layout: { maxFaces, cropSide } }) {
  const $ = (selector) => section.querySelector(selector);
  const startButton = $('#camera-start');
  const stopButton = $('#camera-stop');
  const photoButton = $('#camera-photo-button');
  const photoInput = $('#camera-photo');
  const status = $('#camera-status');
  const stage = $('#camera-stage');
  const video = $('#camera-video');
  const photoCanvas = $('#camera-photo-canvas');
  const placeholder = $('#camera-placeholder');
  const boxes = $('#camera-boxes');
  const stats = $('#camera-stats');
  const noFace = $('#camera-no-face');
  const faceList = $('#camera-faces');
  const mirrorTta = $('#camera-mirror-tta');

  // A reload may keep the mirror box ticked.
  const fer = await load({ model: currentModelBytes(registry), mirror: mirrorTta.checked });

  const cards = Array.from({ length: maxFaces }, (_, i) => new FaceCard(i, emotions, cropSide));
  faceList.append(...cards.map((card) => card.root));
  const boxNodes = Array.from({ length: maxFaces }, (_, i) => {
    const box = element('div', 'camera-box');
    box.style.setProperty('--face-colour', FACE_COLOURS[i]);
    box.append(element('span', 'camera-box-label'));
    box.hidden = true;
    boxes.append(box);
    return box;
  });

  let stream = null;
  let startAttempts = 0; // a stop while the browser asks for permission cancels that start
  let stopTracking = null;
  let shown = 0; // bumped whenever the picture on show changes, so late results are dropped
  let photo = null; // the photo on show, to classify again when the model changes
  let fps = { frames: 0, since: performance.now(), value: 0 };
  // Each stage's milliseconds over recent video frames: the library searches the whole frame
  // for faces only every few frames and follows them in between, so one frame's times jump.
  let meanTimes = null;
  let framesShown = 0;

  function setState(state, detail) {
    section.dataset.state = state;
    status.textContent = detail ? `${STATE_MESSAGES[state]} (${detail})` : STATE_MESSAGES[state];
    status.classList.toggle('error', ['denied', 'no-camera', 'busy', 'insecure', 'lost', 'failed', 'crashed'].includes(state));
    const live = state === 'asking' || state === 'starting' || state === 'on';
    startButton.hidden = live;
    stopButton.hidden = !live;
    section.dispatchEvent(new CustomEvent('camera-state', { detail: { state } }));
  }

  /** A video frame's stage times as running means (a tenth of each new frame); a photo's as they are. */
  function smoothed(times, isVideo) {
    if (!isVideo || !meanTimes) {
      meanTimes = isVideo ? { ...times } : null;
      return times;
    }
    for (const [stage, ms] of Object.entries(times)) meanTimes[stage] += 0.1 * (ms - meanTimes[stage]);
    return { ...meanTimes };
  }

  function show(faces, { width, height, timings }, isVideo) {
    boxNodes.forEach((box, i) => {
      const face = faces[i];
      if (!face) {
        box.hidden = true;
        cards[i].root.hidden = true;
        return;
      }
      // Draw the square the model sees, not the detector's raw box.
      const { x, y, width: side } = face.cropBox;
      box.style.left = `${(100 * x) / width}%`;
      box.style.top = `${(100 * y) / height}%`;
      box.style.width = `${(100 * side) / width}%`;
      box.style.height = `${(100 * side) / height}%`;
      cards[i].show(i, face, emotions);
      box.firstChild.textContent = `${i + 1} · ${emotions[EXPRESSIONS.indexOf(face.expression)]}`;
      box.hidden = false;
    });
    section.dataset.faces = String(Math.min(faces.length, maxFaces));
    noFace.hidden = faces.length > 0;
    const rate = isVideo ? ` · ${fps.value.toFixed(0)} frames/s` : '';
    // Smoothed, the whole-frame flag becomes the share of recent frames searched whole.
    const { totalMs, copyMs, findMs, cropMs, classifyMs, wholeFrame } = smoothed({ ...timings, wholeFrame: Number(timings.wholeFrame) }, isVideo);
    const search = isVideo ? `whole frame in ${(100 * wholeFrame).toFixed(0)}% of frames` : 'whole frame';
    const threads = fer.threads;
    stats.textContent = `${width}×${height}: ${totalMs.toFixed(1)} ms per frame, of which copy ${copyMs.toFixed(1)} + ` +
      `find ${findMs.toFixed(1)} (${search}) + crop ${cropMs.toFixed(1)} + classify${mirrorTta.checked ? ' (with mirror)' : ''} ` +
      `${classifyMs.toFixed(1)} ms${fer.model.integerArithmetic ? ' in 8-bit arithmetic' : ''} in a worker on ${threads} thread${threads === 1 ? '' : 's'}${rate}`;
  }

  function onVideoFaces(faces, frame) {
    show(faces, frame, true);
    section.dataset.frames = String(++framesShown);
    fps.frames += 1;
    const now = performance.now();
    if (now - fps.since >= 1000) fps = { frames: 0, since: now, value: (1000 * fps.frames) / (now - fps.since) };
    // calibrate.js takes its captures from the video's faces.
    section.dispatchEvent(new CustomEvent('camera-faces', { detail: { faces } }));
  }

  /** Classifies the photo on show and shows its faces, unless the picture changed meanwhile. */
  async function classifyPhoto() {
    const picture = shown;
    const faces = await fer.detect(photoCanvas);
    if (picture !== shown) return;
    show(faces, faces.frame, false);
  }

  // Photos get the accurate model; starting the camera after a photo switched to it goes back to
  // the camera's first (fast) model.
  let photoChoseModel = false;
  async function usePhotoModel() {
    if (registry.currentId !== FIRST_MODEL || FIRST_MODEL === PHOTO_MODEL) return;
    try {
      await registry.loadShipped(PHOTO_MODEL);
      photoChoseModel = true;
    } catch {
      // The model the video uses classifies the photo instead; the menu says which is in use.
    }
  }

  async function start() {
    if (photoChoseModel && registry.currentId === PHOTO_MODEL) registry.use(FIRST_MODEL);
    photoChoseModel = false;
    if (!navigator.mediaDevices?.getUserMedia) {
      setState('insecure');
      return;
    }
    setState('asking');
    const attempt = ++startAttempts;
    let granted;
    try {
      granted = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' }, audio: false });
    } catch (error) {
      if (attempt === startAttempts) setState(describeError(error), error.message);
      return;
    }
    if (attempt !== startAttempts) {
      // Stopped (or restarted) while the browser was asking: release what arrived late.
      for (const track of granted.getTracks()) track.stop();
      return;
    }
    stream = granted;
    showPhoto(null); // also drops the results of frames still in flight
    setState('starting');
    for (const track of granted.getVideoTracks()) {
      track.addEventListener('ended', () => {
        if (stream === granted) stop('lost');
      });
    }
    video.srcObject = granted;
    try {
      await video.play(); // needed by iOS Safari to show the stream
    } catch (error) {
      if (attempt === startAttempts) stop('busy', error.message);
      return;
    }
    if (attempt !== startAttempts) return;
    video.hidden = false;
    placeholder.hidden = true;
    stage.style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
    fps = { frames: 0, since: performance.now(), value: 0 };
    meanTimes = null;
    setState('on');
    stopTracking = fer.track(video, onVideoFaces, {
      onError: (error) => {
        if (stream) stop('failed', error.message);
        console.error(error);
      },
    });
  }

  /** Stops the video and releases the camera (its light goes off). */
  function stop(state = 'off', detail) {
    startAttempts += 1;
    shown += 1;
    stopTracking?.();
    stopTracking = null;
    for (const track of stream?.getTracks() ?? []) track.stop();
    stream = null;
    video.srcObject = null;
    video.hidden = true;
    if (!photo) {
      placeholder.hidden = false;
      clearFaces();
    }
    setState(state, detail);
  }

  function clearFaces() {
    boxNodes.forEach((box) => { box.hidden = true; });
    cards.forEach((card) => { card.root.hidden = true; });
    noFace.hidden = true;
    section.dataset.faces = '0';
    stats.textContent = '';
  }

  /** Shows `bitmap` (or no photo, when null) and classifies it. */
  async function showPhoto(bitmap) {
    shown += 1;
    photo?.close();
    photo = bitmap;
    photoCanvas.hidden = !bitmap;
    if (!bitmap) return;
    const scale = Math.min(1, MAX_PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    photoCanvas.width = width;
    photoCanvas.height = height;
    photoCanvas.getContext('2d').drawImage(bitmap, 0, 0, width, height);
    stage.style.aspectRatio = `${width} / ${height}`;
    placeholder.hidden = true;
    await classifyPhoto();
  }

  async function usePhoto(file) {
    if (!file) return;
    if (stream) stop('off');
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch {
      status.textContent = `Could not read ${file.name} as a photo: choose a JPEG or PNG image.`;
      status.classList.add('error');
      return;
    }
    await usePhotoModel();
    try {
      setState('photo', file.name);
      await showPhoto(bitmap);
    } catch (error) {
      if (error.code === 'worker-crashed') return; // the fresh worker classifies the photo again
      status.textContent = `Could not classify ${file.name}: ${error.message ?? error}`;
      status.classList.add('error');
      console.error(error);
    }
  }

  startButton.addEventListener('click', start);
  stopButton.addEventListener('click', () => stop('off'));
  photoButton.addEventListener('click', () => photoInput.click());
  photoInput.addEventListener('change', () => {
    usePhoto(photoInput.files[0]);
    photoInput.value = '';
  });
  stage.addEventListener('dragover', (event) => {
    event.preventDefault();
    stage.classList.add('over');
  });
  stage.addEventListener('dragleave', () => stage.classList.remove('over'));
  stage.addEventListener('drop', (event) => {
    event.preventDefault();
    stage.classList.remove('over');
    usePhoto(event.dataTransfer.files[0]);
  });
  // A new model (e.g. one just trained) or mirror setting classifies the photo on show at once;
  // live video picks it up on its next frame. The library's worker takes requests in order.
  const classifyPhotoAgain = () => {
    if (!photo || stream) return;
    classifyPhoto().catch((error) => {
      if (error.code === 'worker-crashed') return;
      setState('failed', error.message ?? String(error));
      console.error(error);
    });
  };
  // A crash while the model or the mirror setting is on its way is no failure: the library
  // sends the fresh worker the current ones.
  registry.addEventListener('change', () => {
    fer.setModel(currentModelBytes(registry)).catch((error) => {
      if (error.code !== 'worker-crashed') setState('failed', `the new model did not reach the camera: ${error.message}`);
    });
    classifyPhotoAgain();
  });
  mirrorTta.addEventListener('change', () => {
    fer.setMirror(mirrorTta.checked).catch((error) => {
      if (error.code !== 'worker-crashed') setState('failed', error.message);
    });
    classifyPhotoAgain();
  });

  fer.addEventListener('restart', ({ detail: { restarts } }) => {
    section.dataset.workerRestarts = String(restarts);
    classifyPhotoAgain();
  });
  fer.addEventListener('failed', ({ detail: { error } }) => {
    startButton.disabled = true;
    photoButton.disabled = true;
    stop('crashed', error.message);
  });

  startButton.disabled = false;
  photoButton.disabled = false;
  setState('off');
  return fer;
}
