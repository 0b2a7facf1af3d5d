// The camera section: live video (or a dropped photo) → faces found, cropped the FER2013 way
// and classified in wasm → boxes with labels over the picture, the 48x48 crop each face gives
// the model, seven smoothed probability bars, frames/s and milliseconds per stage.
//
// The wasm work happens in camera-worker.js: each frame goes there as a transferred
// ImageBitmap, one frame at a time (a frame that arrives while the worker is busy is skipped,
// so what is drawn is never more than one frame behind), and the faces come back.
//
// Nothing breaks the tab: while the tab is hidden no frame is sent (the camera stays open, and
// the video goes on where it is when the tab is shown again); if the worker crashes, a fresh
// one gets the detector, the model and the test-time augmentation again and the video goes on,
// unless it keeps crashing.
//
// A face is drawn once the tracks (Rust's face::tracks) have seen it in a few frames in a row,
// named by the label they hold steady. The section dispatches 'camera-state' ({state}) and,
// for each video frame, 'camera-faces' (the worker's reply and the layout), which the
// calibration (calibrate.js) takes its captures from.
import { WorkerClient, WorkerCrash } from './worker-rpc.js';
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

// A worker that crashes again as soon as it starts (on every frame, say) would otherwise be
// restarted for ever: past this many crashes in a minute, the camera gives up.
const MAX_RESTARTS = 3;
const RESTART_WINDOW_MS = 60_000;

// Photos are scaled down to this long side first: faces stay large enough to find, and a
// 50-megapixel photo does not need 200 MB of wasm memory.
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

  /** `label`: the expression to name, as the tracks hold it (not always the top bar). */
  show(index, crop, probs, label, emotions) {
    const rgba = this.pixels.data;
    for (let i = 0; i < crop.length; i++) {
      rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = crop[i];
      rgba[4 * i + 3] = 255;
    }
    this.context.putImageData(this.pixels, 0, 0);
    probs.forEach((p, k) => {
      this.bars[k].fill.style.width = `${(100 * p).toFixed(1)}%`;
      this.bars[k].value.textContent = `${Math.round(100 * p)}%`;
    });
    this.caption.textContent = `Face ${index + 1}: ${emotions[label]} ${Math.round(100 * probs[label])}%`;
    this.root.dataset.probs = Array.from(probs).join(',');
    this.root.dataset.label = String(label);
    this.root.hidden = false;
  }
}

/**
 * Fills `section` and runs it. `registry` is the ModelRegistry whose current model classifies
 * the faces (a copy of it lives in the camera worker).
 */
export async function setupCamera({ section, registry }) {
  try {
    await runCamera({ section, registry });
  } catch (error) {
    // The rest of the page keeps working without the camera.
    section.dataset.state = 'unavailable';
    const status = section.querySelector('#camera-status');
    status.textContent = `The face finder could not start: ${error.message ?? error}`;
    status.classList.add('error');
  }
}

async function runCamera({ section, registry }) {
  const [detectorManifest, detectorWeights] = await Promise.all([
    fetch('vendor/face-detector/tiny_face_detector_model-weights_manifest.json').then((r) => r.ok ? r.text() : Promise.reject(new Error(`the face detector's manifest is missing (HTTP ${r.status}); run ./build.sh wasm`))),
    fetch('vendor/face-detector/tiny_face_detector_model.bin').then((r) => r.ok ? r.arrayBuffer() : Promise.reject(new Error(`the face detector's weights are missing (HTTP ${r.status}); run ./build.sh wasm`))),
  ]);
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

  const workerUrl = new URL('./camera-worker.js', import.meta.url);
  let worker = null;
  let workerReady = null; // resolves to `worker` once it has the detector, the model and the tta
  let running = false; // set up: from then on a crash restarts the worker
  let crashes = []; // when the recent ones happened
  let restarts = 0;
  // Sent as exact f32 weights; a model stored in 8 bits (the default one) is classified in
  // integer arithmetic, which its weights lose nothing to (see engine::int8 in the Rust code).
  const modelMessage = () => {
    const model = registry.current();
    return { bytes: model.toBytes('f32'), int8: model.storedPrecision() === 'int8' };
  };
  const ttaMessage = () => ({ tta: mirrorTta.checked ? 'flip' : 'none' }); // a reload may keep the box ticked

  /** A fresh worker, given everything it needs; resolves to what its 'start' answers. */
  function startWorker() {
    const client = new WorkerClient(workerUrl, { onCrash: (error) => workerCrashed(client, error) });
    worker = client;
    let started;
    workerReady = (async () => {
      // A copy is transferred: the weights are kept here for the next worker.
      const weights = detectorWeights.slice(0);
      started = await client.request('start', { detectorManifest, detectorWeights: weights }, [weights]);
      await client.request('model', modelMessage());
      await client.request('tta', ttaMessage());
      return client;
    })();
    return workerReady.then(() => started);
  }

  /** A request to the worker, once it is ready (after a crash: once its successor is). */
  async function ask(type, message, transfer) {
    return (await workerReady).request(type, message, transfer);
  }

  const first = await startWorker();
  const { layout, emotions } = first;
  let { threads } = first; // told again by each fresh worker

  const cards = Array.from({ length: layout.maxFaces }, (_, i) => new FaceCard(i, emotions, layout.cropSide));
  faceList.append(...cards.map((card) => card.root));
  const boxNodes = Array.from({ length: layout.maxFaces }, (_, i) => {
    const box = element('div', 'camera-box');
    box.style.setProperty('--face-colour', FACE_COLOURS[i]);
    box.append(element('span', 'camera-box-label'));
    box.hidden = true;
    boxes.append(box);
    return box;
  });

  let stream = null;
  let startAttempts = 0; // a stop while the browser asks for permission cancels that start
  let frameRequest = null;
  let frameInFlight = false;
  let shown = 0; // bumped whenever the picture on show changes, so late results are dropped
  let photo = null; // the photo on show, to classify again when the model changes
  let fps = { frames: 0, since: performance.now(), value: 0 };
  // Each stage's milliseconds over recent video frames: the worker searches the whole frame for
  // faces only every few frames and follows them in between, so one frame's times jump.
  let meanTimes = null;
  let framesShown = 0;
  const tabHidden = () => document.visibilityState === 'hidden';

  function setState(state, detail) {
    section.dataset.state = state;
    status.textContent = detail ? `${STATE_MESSAGES[state]} (${detail})` : STATE_MESSAGES[state];
    status.classList.toggle('error', ['denied', 'no-camera', 'busy', 'insecure', 'lost', 'failed', 'crashed'].includes(state));
    const live = state === 'asking' || state === 'starting' || state === 'on';
    startButton.hidden = live;
    stopButton.hidden = !live;
    section.dispatchEvent(new CustomEvent('camera-state', { detail: { state } }));
  }

  /**
   * Sends `source` (video or photo) to the worker and shows its faces; resolves to false,
   * showing nothing, when the picture on show changed meanwhile.
   */
  async function classify(source, isPhoto) {
    const picture = shown;
    const client = await workerReady;
    const started = performance.now();
    const bitmap = await createImageBitmap(source);
    const { width, height } = bitmap;
    let result;
    try {
      result = await client.request('frame', { bitmap, kind: isPhoto ? 'photo' : 'video' }, [bitmap]);
    } finally {
      bitmap.close(); // a no-op once transferred; frees it when the worker crashed meanwhile
    }
    if (picture !== shown) return false;
    show(result, width, height, performance.now() - started);
    // calibrate.js takes its captures from the video's faces.
    if (!isPhoto) section.dispatchEvent(new CustomEvent('camera-faces', { detail: { ...result, layout } }));
    return true;
  }

  /** A video frame's stage times as running means (a tenth of each new frame); a photo's as they are. */
  function smoothed(times, video) {
    if (!video || !meanTimes) {
      meanTimes = video ? { ...times } : null;
      return times;
    }
    for (const [stage, ms] of Object.entries(times)) meanTimes[stage] += 0.1 * (ms - meanTimes[stage]);
    return { ...meanTimes };
  }

  function show({ count, faces, crops, probs: allProbs, tta, int8, ...frameTimes }, width, height, frameMs) {
    const { faceFields, cropSide, classes } = layout;
    const cropPixels = cropSide * cropSide;
    let onShow = 0;
    for (let i = 0; i < layout.maxFaces; i++) {
      const box = boxNodes[i];
      const record = faces.subarray(i * faceFields, (i + 1) * faceFields);
      // A face found in fewer consecutive frames than the tracks ask for is not drawn yet: a
      // detector's one-frame false find never shows.
      if (i >= count || !record[layout.faceField.shown]) {
        box.hidden = true;
        cards[i].root.hidden = true;
        continue;
      }
      onShow += 1;
      // Draw the square the model sees, not the detector's raw box.
      const [left, top, side] = [record[layout.faceField.cropLeft], record[layout.faceField.cropTop], record[layout.faceField.cropSide]];
      box.style.left = `${(100 * left) / width}%`;
      box.style.top = `${(100 * top) / height}%`;
      box.style.width = `${(100 * side) / width}%`;
      box.style.height = `${(100 * side) / height}%`;
      const probs = allProbs.subarray(i * classes, (i + 1) * classes);
      // The label the tracks hold steady (with hysteresis), not the leading bar of this frame.
      const label = record[layout.faceField.label];
      cards[i].show(i, crops.subarray(i * cropPixels, (i + 1) * cropPixels), probs, label, emotions);
      box.firstChild.textContent = `${i + 1} · ${emotions[label]}`;
      box.hidden = false;
    }
    section.dataset.faces = String(onShow);
    noFace.hidden = count > 0;
    // The total runs from the frame's capture to its faces coming back, so it also counts
    // handing the frame to the worker and back.
    const video = section.dataset.state === 'on';
    const rate = video ? ` · ${fps.value.toFixed(0)} frames/s` : '';
    // Smoothed, the 0-or-1 whole-frame flag becomes the share of recent frames searched whole.
    const { totalMs, copyMs, findMs, cropMs, classifyMs, wholeFrame } = smoothed({ totalMs: frameMs, ...frameTimes }, video);
    const search = video ? `whole frame in ${(100 * wholeFrame).toFixed(0)}% of frames` : 'whole frame';
    stats.textContent = `${width}×${height}: ${totalMs.toFixed(1)} ms per frame, of which copy ${copyMs.toFixed(1)} + ` +
      `find ${findMs.toFixed(1)} (${search}) + crop ${cropMs.toFixed(1)} + classify${tta === 'flip' ? ' (with mirror)' : ''} ` +
      `${classifyMs.toFixed(1)} ms${int8 ? ' in 8-bit arithmetic' : ''} in a worker on ${threads} thread${threads === 1 ? '' : 's'}${rate}`;
  }

  function nextFrame() {
    frameRequest = 'requestVideoFrameCallback' in video
      ? { video: video.requestVideoFrameCallback(onFrame) }
      : { animation: requestAnimationFrame(onFrame) };
  }

  function onFrame() {
    if (!stream) return;
    if (tabHidden()) {
      // No work for a tab nobody sees; showing it again restarts the loop.
      frameRequest = null;
      return;
    }
    if (video.videoWidth > 0 && !frameInFlight) {
      frameInFlight = true;
      classify(video, false).then((done) => {
        if (!done) return;
        section.dataset.frames = String(++framesShown);
        fps.frames += 1;
        const now = performance.now();
        if (now - fps.since >= 1000) {
          fps = { frames: 0, since: now, value: (1000 * fps.frames) / (now - fps.since) };
        }
      }, (error) => {
        if (error instanceof WorkerCrash) return; // a fresh worker takes the next frame
        if (stream) stop('failed', error.message ?? String(error));
        console.error(error);
      }).finally(() => { frameInFlight = false; });
    }
    nextFrame();
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
    nextFrame();
  }

  /** Stops the video and releases the camera (its light goes off). */
  function stop(state = 'off', detail) {
    startAttempts += 1;
    shown += 1;
    if (frameRequest?.video !== undefined) video.cancelVideoFrameCallback(frameRequest.video);
    if (frameRequest?.animation !== undefined) cancelAnimationFrame(frameRequest.animation);
    frameRequest = null;
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
    await classify(photoCanvas, true);
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
      if (error instanceof WorkerCrash) return; // the fresh worker classifies the photo again
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
  // A new model (e.g. one just trained) or test-time augmentation classifies the photo on
  // show at once; live video picks it up on its next frame. The worker takes messages in
  // order, so the photo is classified with the new setting.
  const classifyPhotoAgain = () => {
    if (!photo || stream) return;
    classify(photoCanvas, true).catch((error) => {
      if (error instanceof WorkerCrash) return;
      setState('failed', error.message ?? String(error));
      console.error(error);
    });
  };
  // A crash while the model or the tta is on its way is no failure: the fresh worker is sent
  // the current ones.
  registry.addEventListener('change', () => {
    ask('model', modelMessage()).catch((error) => {
      if (!(error instanceof WorkerCrash)) setState('failed', `the new model did not reach the camera: ${error.message}`);
    });
    classifyPhotoAgain();
  });
  mirrorTta.addEventListener('change', () => {
    ask('tta', ttaMessage()).catch((error) => {
      if (!(error instanceof WorkerCrash)) setState('failed', error.message);
    });
    classifyPhotoAgain();
  });

  document.addEventListener('visibilitychange', () => {
    if (tabHidden() || !stream || frameRequest || section.dataset.state !== 'on') return;
    fps = { frames: 0, since: performance.now(), value: 0 };
    nextFrame();
  });

  function workerCrashed(client, error) {
    if (client !== worker || !running) return; // before set-up, the set-up fails with it
    const now = performance.now();
    crashes = crashes.filter((when) => now - when < RESTART_WINDOW_MS).concat(now);
    if (crashes.length > MAX_RESTARTS) {
      giveUp(error);
      return;
    }
    section.dataset.workerRestarts = String(++restarts);
    console.warn(`The camera's worker stopped (${error.message}); starting a fresh one.`);
    startWorker().then((fresh) => {
      threads = fresh.threads;
      classifyPhotoAgain();
    }, (failure) => {
      // A fresh worker that crashes is handled as any crash; one that refuses to start is final.
      if (!(failure instanceof WorkerCrash)) giveUp(failure);
    });
  }

  function giveUp(error) {
    running = false;
    worker.worker.terminate();
    workerReady = Promise.reject(new WorkerCrash(error.message));
    workerReady.catch(() => {});
    startButton.disabled = true;
    photoButton.disabled = true;
    stop('crashed', error.message);
  }

  startButton.disabled = false;
  photoButton.disabled = false;
  running = true;
  setState('off');
}
