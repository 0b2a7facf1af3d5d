// Page entry: start the wasm engine and load the camera's first model (both fetched at once),
// then hand the shared pieces to each section (camera, training, calibration). Sections never
// import each other; they share the ModelRegistry, whose 'change' event says which model
// classifies faces; the calibration listens to the camera section's events and calibrates
// through the camera's recognizer.
//
// The camera, photos and calibration go through the library (www/lib/, what an app installs
// as `fer-cnn`), by its public entry only. Before the camera's first prediction the page fetches one engine
// build, one model and the face detector: the library's worker and the training worker get
// the engine compiled once (engine.js), the other shipped models are fetched when chosen
// (models.js), and the training worker starts when the user reaches for the training
// section (or at its first request).
import { startPageEngine } from './engine.js';
import { setupCalibration } from './calibrate.js';
import { setupCamera } from './camera.js';
import { FIRST_MODEL, ModelRegistry, fetchShippedModel } from './models.js';
import { setupTraining } from './training.js';

const status = document.querySelector('#engine-status');

/** Starts `worker` (a WorkerClient) the first time the user points at, focuses or drags a file onto `section`. */
function startWhenApproached(section, worker) {
  const start = () => {
    for (const type of ['pointerenter', 'focusin', 'dragenter']) section.removeEventListener(type, start);
    worker.start().catch(() => {}); // a worker that fails to start fails its first request
  };
  for (const type of ['pointerenter', 'focusin', 'dragenter']) section.addEventListener(type, start);
}

async function main() {
  const engine = startPageEngine();
  const firstModel = fetchShippedModel(FIRST_MODEL);
  firstModel.catch(() => {}); // reported below, once the engine has started
  const { fer } = await engine;
  document.querySelector('#version').textContent = `fer-cnn ${fer.version()}`;
  const registry = new ModelRegistry(fer, document.querySelector('#model-select'), document.querySelector('#model-info'));
  await registry.loadShipped(FIRST_MODEL, { bytes: firstModel });
  const camera = document.querySelector('#camera');
  const recognizer = await setupCamera({ section: camera, registry, emotions: fer.emotions(), layout: fer.cameraLayout() });
  const training = await setupTraining({ fer, registry });
  startWhenApproached(document.querySelector('#data'), training.worker);
  await setupCalibration({ fer, recognizer, registry, camera });
  status.textContent = 'Ready';
  document.body.dataset.ready = 'true';
}

// A failure rejects main()'s promise with nobody to handle it: startup-guard.js shows it, as
// it does a module of the page that does not load.
main();
