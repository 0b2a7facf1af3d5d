// Page entry: start the wasm engine, load the default model, then hand the shared pieces to
// each section (camera, training, calibration). Sections never import each other; they share
// the ModelRegistry, whose 'change' event says which model classifies faces; the calibration
// listens to the camera section's events and runs in the training worker.
import init, * as fer from '../pkg/fer_cnn.js';
import { setupCalibration } from './calibrate.js';
import { setupCamera } from './camera.js';
import { ModelRegistry } from './models.js';
import { setupTraining } from './training.js';

const status = document.querySelector('#engine-status');

async function main() {
  await init();
  document.querySelector('#version').textContent = `fer-cnn ${fer.version()}`;
  const registry = new ModelRegistry(fer, document.querySelector('#model-select'), document.querySelector('#model-info'));
  await registry.loadDefault();
  const camera = document.querySelector('#camera');
  await setupCamera({ section: camera, registry });
  const training = await setupTraining({ fer, registry });
  await setupCalibration({ fer, registry, camera, training });
  status.textContent = 'Ready';
  document.body.dataset.ready = 'true';
}

main().catch((error) => {
  status.textContent = `Could not start: ${error.message ?? error}`;
  status.classList.add('error');
  console.error(error);
});
