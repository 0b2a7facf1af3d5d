// The "train on FER2013" half of the page: load the CSV, browse it, train, watch it learn,
// look inside the model, keep it. The page only draws: a Web Worker (train-worker.js, with its
// own wasm instance) holds the faces and the training run, so the page stays responsive.
import { LearningChart } from './charts.js';
import { withF32Decimals } from './f32.js';
import { WorkerClient } from './worker-rpc.js';
import {
  captionedFace, describeLayer, drawActivations, drawFace, faceCanvas, facePixels, probabilityBars, renderConfusion, renderFilters,
  setCaption,
} from './faces.js';

const $ = (selector) => document.querySelector(selector);

const BROWSE_PER_CLASS = 12;
const USAGES = ['Training', 'PublicTest', 'PrivateTest'];

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);
const count = (n) => n.toLocaleString('en');
const percent = (share) => `${(100 * share).toFixed(1)}%`;

function duration(seconds) {
  if (!Number.isFinite(seconds)) return '…';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

function show(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

/**
 * Wires up the data, browse, train, learn, inside and keep sections. Each section function
 * returns its handlers for the worker's messages; what sections need from each other goes
 * through `page` (the number of faces loaded, the training state, and a few actions such as
 * `page.inspect(row)` that the section owning them adds).
 */
export async function setupTraining({ fer, registry }) {
  const emotions = fer.emotions();
  const handlers = {};
  const worker = new WorkerClient(new URL('./train-worker.js', import.meta.url), {
    onEvent: (event) => handlers[event.event]?.(event),
    onCrash: (error) => show($('#load-error'), `The training worker failed (${error.message}); reload the page.`),
  });
  const page = { fer, registry, emotions, worker, faces: 0, loading: false, trainState: 'idle' };
  page.isTraining = () => ['running', 'paused', 'stopping'].includes(page.trainState);
  Object.assign(handlers, dataSection(page), browseSection(page), trainSection(page), insideSection(page));
  await keepSection(page);
  return { worker };
}

function dataSection(page) {
  const dropZone = $('#drop-zone');
  const fileInput = $('#data-file');

  const startLoad = (file) => {
    if (!file || page.loading) return;
    if (page.isTraining()) {
      show($('#load-error'), 'Stop the training before loading another file.');
      return;
    }
    page.loading = true;
    page.faces = 0;
    for (const id of ['#browse', '#train', '#learn', '#inside', '#load-summary']) $(id).hidden = true;
    show($('#load-error'), '');
    $('#load-progress').hidden = false;
    $('#load-bar').value = 0;
    $('#load-status').textContent = `Reading ${file.name}…`;
    page.worker.request('load', { file }).then(loaded, (error) => loadFailed(file.name, error.message));
  };

  fileInput.addEventListener('change', () => {
    startLoad(fileInput.files[0]);
    fileInput.value = '';
  });
  dropZone.addEventListener('dragover', (event) => {
    event.preventDefault();
    dropZone.classList.add('over');
  });
  dropZone.addEventListener('dragleave', () => dropZone.classList.remove('over'));
  dropZone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropZone.classList.remove('over');
    startLoad(event.dataTransfer.files[0]);
  });

  const handlers = {
    'load-progress'({ fileBytes, fileSize, csvBytes, rowsOk, rowsBad, seconds }) {
      $('#load-bar').value = fileSize ? fileBytes / fileSize : 0;
      $('#load-status').textContent = `${megabytes(fileBytes)} of ${megabytes(fileSize)} MB read · ${count(rowsOk)} faces` +
        (rowsBad ? ` · ${count(rowsBad)} bad rows` : '') + ` · ${megabytes(csvBytes / seconds)} MB/s of CSV`;
    },
  };

  function loadFailed(name, message) {
    page.loading = false;
    $('#load-progress').hidden = true;
    show($('#load-error'), `Could not load "${name}": ${message}`);
  }

  function loaded({ name, report, seconds, faces, wasmMemoryBytes }) {
    page.loading = false;
    page.faces = faces;
    page.trainingRows = report.per_usage[0];
    $('#load-progress').hidden = true;
    const totals = $('#load-totals');
    totals.textContent = `Loaded ${count(faces)} faces from ${name} (${megabytes(report.bytes_read)} MB of CSV) in ` +
      `${seconds.toFixed(1)} s, ${megabytes(report.bytes_read / seconds)} MB/s. They take ${megabytes(faces * facePixels())} MB ` +
      `of the worker's ${megabytes(wasmMemoryBytes)} MB of wasm memory.`;
    Object.assign(totals.dataset, { faces, seconds: seconds.toFixed(3), wasmMemoryBytes });
    renderUsageTable($('#usage-table'), report, page.emotions);
    renderBadRows(report);
    $('#load-summary').hidden = false;
    page.onDataLoaded();
  }

  return handlers;
}

function renderUsageTable(table, report, emotions) {
  const present = USAGES.map((usage, u) => [usage, u]).filter(([, u]) => report.per_usage[u] > 0);
  const header = `<thead><tr><th scope="col">emotion</th>${present.map(([usage]) => `<th scope="col">${usage}</th>`).join('')}` +
    `<th scope="col">all</th></tr></thead>`;
  const rows = emotions.map((emotion, k) => {
    const cells = present.map(([, u]) => report.per_class[u][k]);
    const total = cells.reduce((a, b) => a + b, 0);
    return `<tr><th scope="row">${emotion}</th>${cells.map((c) => `<td>${count(c)}</td>`).join('')}<td>${count(total)}</td></tr>`;
  });
  const totals = present.map(([, u]) => report.per_usage[u]);
  const footer = `<tfoot><tr><th scope="row">all</th>${totals.map((c) => `<td>${count(c)}</td>`).join('')}` +
    `<td>${count(report.rows_ok)}</td></tr></tfoot>`;
  table.innerHTML = `${header}<tbody>${rows.join('')}</tbody>${footer}`;
}

function renderBadRows(report) {
  const details = $('#bad-rows');
  details.hidden = report.rows_bad === 0;
  details.querySelector('summary').textContent =
    `${count(report.rows_bad)} bad row${report.rows_bad === 1 ? '' : 's'} skipped (line number and reason)`;
  const list = $('#bad-row-list');
  list.replaceChildren(...report.bad_rows.map(({ line, reason }) => {
    const item = document.createElement('li');
    item.textContent = `line ${count(line)}: ${reason}`;
    return item;
  }));
  if (report.rows_bad > report.bad_rows.length) {
    const more = document.createElement('li');
    more.className = 'more';
    more.textContent = `… and ${count(report.rows_bad - report.bad_rows.length)} more`;
    list.append(more);
  }
}

function browseSection(page) {
  const requestFaces = () => page.worker.request('sample-faces', { perClass: BROWSE_PER_CLASS }).then(showFaces, (error) => show($('#load-error'), error.message));
  $('#browse-more').addEventListener('click', requestFaces);
  page.requestFaces = requestFaces;

  function showFaces({ classes }) {
      const grid = $('#browse-grid');
      grid.replaceChildren(...classes.map(({ label, total, rows, usages, faces }) => {
        const group = document.createElement('div');
        group.className = 'emotion-row';
        const heading = document.createElement('h3');
        heading.textContent = `${page.emotions[label]} `;
        heading.append(Object.assign(document.createElement('small'), { textContent: count(total) }));
        const strip = document.createElement('div');
        strip.className = 'face-strip';
        rows.forEach((row, i) => {
          const face = faces.subarray(i * facePixels(), (i + 1) * facePixels());
          const button = document.createElement('button');
          button.type = 'button';
          button.className = 'face-button';
          button.title = `row ${count(row)} (${usages[i]}): look inside the model with this face`;
          button.append(faceCanvas(face));
          button.addEventListener('click', () => {
            page.inspect(row);
            $('#inside').scrollIntoView({ behavior: 'smooth', block: 'start' });
          });
          strip.append(button);
        });
        group.append(heading, strip);
        return group;
      }));
  }
  return {};
}

function trainSection(page) {
  const { fer, registry, worker, emotions } = page;
  const section = $('#train');
  const form = $('#train-form');
  const fields = form.elements;
  const pauseButton = $('#train-pause');
  const stopButton = $('#train-stop');
  const lossChart = new LearningChart($('#loss-chart'), {
    title: 'Loss',
    format: (v) => v.toFixed(2),
    series: [
      { label: 'train', stroke: '#3a6df0' },
      { label: 'PublicTest', stroke: '#e0692f', points: true },
    ],
  });
  const accuracyChart = new LearningChart($('#accuracy-chart'), {
    title: 'Accuracy',
    format: (v) => `${(100 * v).toFixed(0)}%`,
    yRange: [0, 1],
    series: [
      { label: 'train', stroke: '#3a6df0' },
      { label: 'PublicTest', stroke: '#e0692f', points: true },
    ],
  });
  let run = null; // what the page knows of the run in progress
  let testViews = 'none'; // the run's test-time augmentation

  // Presets, their recipes and what each choice of the form stands for all come from Rust.
  const options = withF32Decimals(fer.trainingOptions());
  const presets = new Map(options.presets.map((preset) => [preset.name, preset]));
  const defaultArchitecture = registry.describe('default')?.spec.name;
  for (const name of presets.keys()) {
    fields.preset.add(new Option(name === defaultArchitecture ? `${name} (the default model's)` : name, name));
  }
  const recipe = () => presets.get(fields.preset.value).recipe;
  fields.preset.value = options.suggested;

  const applySuggested = () => {
    const { description } = presets.get(fields.preset.value);
    const { limit, config, tta } = recipe();
    $('#preset-description').textContent = description;
    const settings = {
      ...config, limit: limit ?? page.trainingRows, optimizer: config.optimizer.type, schedule: config.schedule.type,
      augment: config.augment !== null, tta,
    };
    for (const element of fields) {
      if (!element.name || element.name === 'preset' || !(element.name in settings)) continue;
      const value = settings[element.name];
      if (element.type === 'checkbox') element.checked = value;
      else element.value = element.name === 'limit' ? Math.min(value, page.trainingRows || value) : value;
    }
  };
  fields.preset.addEventListener('change', applySuggested);
  $('#train-defaults').addEventListener('click', applySuggested);

  const setState = (state) => {
    page.trainState = state;
    section.dataset.state = state;
    const active = page.isTraining();
    $('#train-options').disabled = active;
    $('#train-start').disabled = active;
    $('#train-defaults').disabled = active;
    pauseButton.disabled = !(state === 'running' || state === 'paused');
    pauseButton.textContent = state === 'paused' ? 'Resume' : 'Pause';
    stopButton.disabled = !(state === 'running' || state === 'paused');
  };
  setState('idle');

  // The recipe's config with the form's edits.
  const readConfig = () => {
    const number = (name) => Number(fields.namedItem(name).value);
    const { config } = recipe();
    const chosen = (list, type, current) => (current.type === type ? current : list.find((item) => item.type === type));
    return {
      ...options.defaults,
      ...config,
      epochs: number('epochs'),
      batch_size: number('batch_size'),
      lr: number('lr'),
      optimizer: chosen(options.optimizers, fields.optimizer.value, config.optimizer),
      weight_decay: number('weight_decay'),
      schedule: chosen(options.schedules, fields.schedule.value, config.schedule),
      label_smoothing: number('label_smoothing'),
      augment: fields.augment.checked ? (config.augment ?? options.augment) : null,
      mixup_alpha: number('mixup_alpha'),
      class_weights: fields.class_weights.checked,
      seed: number('seed'),
    };
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    show($('#train-error'), '');
    $('#final-result').textContent = '';
    setState('running');
    testViews = fields.tta.value;
    const preset = fields.preset.value;
    worker.request('train', { preset, config: readConfig(), limit: Number(fields.limit.value), tta: testViews })
      .then(finished, (error) => {
        show($('#train-error'), `Training failed: ${error.message}`);
        setState('ready');
      });
  });

  pauseButton.addEventListener('click', () => {
    if (page.trainState === 'running') {
      worker.request('pause');
      pauseButton.disabled = true;
      $('#train-status').textContent = 'Pausing after this batch…';
    } else if (page.trainState === 'paused') {
      worker.request('resume');
      setState('running');
    }
  });
  stopButton.addEventListener('click', () => {
    worker.request('stop');
    setState('stopping');
    $('#train-status').textContent = 'Stopping after this batch; the model trained so far is kept…';
  });

  page.onDataLoaded = () => {
    $('#train-available').textContent = `of ${count(page.trainingRows)} Training faces`;
    fields.limit.max = page.trainingRows;
    applySuggested();
    setState('ready');
    // '#learn' too, before any training: laying out its charts for the first time takes a long
    // main-thread task, which must not fall inside a training run.
    for (const id of ['#browse', '#train', '#learn', '#inside']) $(id).hidden = false;
    page.requestFaces();
    page.sendInspectModel();
    page.inspect(0);
  };

  // The same faces are shown for the whole run; each epoch only changes their captions.
  const showPreviewFaces = ({ rows, labels, faces }) => {
    $('#predictions').replaceChildren(...rows.map((row, i) => {
      const face = faces.subarray(i * facePixels(), (i + 1) * facePixels());
      return captionedFace(face, `${emotions[labels[i]]}?`);
    }));
  };
  const showPredictions = (predictions) => {
    const { rows, labels } = run.preview;
    [...$('#predictions').children].forEach((figure, i) => {
      const { predicted, confidence } = predictions[i];
      const [guess, truth] = [emotions[predicted], emotions[labels[i]]];
      setCaption(figure, predicted === labels[i] ? guess : `${guess} (${truth})`, {
        tone: predicted === labels[i] ? 'good' : 'bad',
        title: `row ${count(rows[i])}: predicted ${guess} (${percent(confidence)}), true ${truth}`,
      });
    });
  };

  const stats = $('#train-stats');
  const handlers = {
    'train-started'(message) {
      run = message;
      for (const figure of ['epoch', 'epochsDone', 'imagesPerSecond', 'averageImagesPerSecond', 'publictestAccuracy']) delete section.dataset[figure];
      section.dataset.threads = message.threads;
      $('#learn').hidden = false;
      $('#train-progress').hidden = false;
      $('#train-bar').value = 0;
      const threads = message.threads === 1 ? 'one thread' : `${message.threads} threads`;
      $('#train-status').textContent = `Training ${message.preset} on ${count(message.trainRows)} faces with ${threads}…`;
      stats.textContent = '';
      lossChart.reset(message.epochs);
      accuracyChart.reset(message.epochs);
      $('#confusion').replaceChildren();
      $('#confusion-when').textContent = '';
      $('#confusion-empty').hidden = false;
      showPreviewFaces(message.preview);
    },

    'train-progress'({ epoch, loss, accuracy, lr, samplesDone, totalSamples, imagesPerSecond, etaSeconds, filters }) {
      $('#train-bar').value = samplesDone / totalSamples;
      if (page.trainState === 'running') {
        $('#train-status').textContent = `Epoch ${Math.min(run.epochs, Math.floor(epoch) + 1)} of ${run.epochs} · ` +
          `${count(Math.round(imagesPerSecond))} images/s · about ${duration(etaSeconds)} left`;
      }
      stats.textContent = `loss ${loss.toFixed(3)} · train accuracy ${percent(accuracy)} · learning rate ${lr.toPrecision(3)}`;
      Object.assign(section.dataset, { imagesPerSecond: imagesPerSecond.toFixed(1), epoch: epoch.toFixed(3) });
      lossChart.add(epoch, [loss, null]);
      accuracyChart.add(epoch, [accuracy, null]);
      if (!$('#inside').hidden) renderFilters($('#filters'), filters);
    },

    'train-status'({ text }) {
      $('#train-status').textContent = text;
    },

    epoch({ epoch: done, train, public_test: publicTest, predictions }) {
      if (publicTest) {
        lossChart.add(done, [null, publicTest.loss]);
        accuracyChart.add(done, [null, publicTest.accuracy]);
        renderConfusion($('#confusion'), publicTest.confusion, publicTest.per_class, emotions);
        $('#confusion-empty').hidden = true;
        $('#confusion-when').textContent = `after epoch ${done}: ${percent(publicTest.accuracy)} of ${count(publicTest.n)} right`;
        section.dataset.publictestAccuracy = publicTest.accuracy.toFixed(4);
      }
      section.dataset.epochsDone = done;
      stats.textContent = `Epoch ${done}: train loss ${train.loss.toFixed(3)}, accuracy ${percent(train.accuracy)}` +
        (publicTest ? ` · PublicTest loss ${publicTest.loss.toFixed(3)}, accuracy ${percent(publicTest.accuracy)}` : '');
      showPredictions(predictions);
    },

    paused() {
      // A stop clicked while the pause was on its way wins.
      if (page.trainState === 'stopping') return;
      setState('paused');
      $('#train-status').textContent = 'Paused.';
    },

    resumed() {
      if (page.trainState === 'paused') setState('running');
    },

  };

  async function finished({ preset, completed, epochsTrained, trainRows, privateTest, modelBytes, diverged, averageImagesPerSecond, trainSeconds }) {
    if (completed) $('#train-bar').value = 1;
    if (diverged) show($('#train-error'), diverged);
    const epochs = `${Number.isInteger(epochsTrained) ? epochsTrained : epochsTrained.toFixed(1)} epoch${epochsTrained === 1 ? '' : 's'}`;
    $('#train-status').textContent = `${completed ? 'Finished' : 'Stopped'}: ${epochs} in ${duration(trainSeconds)} of training, ` +
      `${count(Math.round(averageImagesPerSecond))} images/s on average.`;
    section.dataset.averageImagesPerSecond = averageImagesPerSecond.toFixed(1);
    if (privateTest) {
      const views = { none: '', flip: ', each with its mirror image', flip_shift: ', each mirrored and shifted (10 views)' }[testViews];
      $('#final-result').textContent = `Final PrivateTest accuracy: ${percent(privateTest.accuracy)} of ${count(privateTest.n)} faces${views} ` +
        `(per emotion: ${emotions.map((e, k) => `${e} ${(100 * privateTest.per_class[k]).toFixed(0)}%`).join(', ')}).`;
    }
    if (!modelBytes) {
      $('#train-status').textContent = 'Stopped before the first epoch ended: no model to keep.';
      setState('ready');
      return;
    }
    const label = `Trained here: ${preset}, ${count(trainRows)} faces, ${epochs}`;
    const kept = await registry.keepTrained(modelBytes, label, (precision) => worker.request('export', { precision }).then(({ bytes }) => bytes));
    page.announceKept(label, kept);
    setState('finished');
  }

  return handlers;
}

function insideSection(page) {
  const { worker, registry, emotions } = page;
  page.inspect = (row) => worker.request('inspect', { row });
  // The worker looks inside the model being trained; otherwise inside the page's current model.
  page.sendInspectModel = () => {
    worker.request('inspect-model', { bytes: registry.current().toBytes('f32'), label: `the page's current model, "${registry.currentLabel()}"` });
  };
  // In a task of its own: serialising a large model here would lengthen whichever task changed
  // the model (the end of a training run, say) past 50 ms.
  registry.addEventListener('change', () => setTimeout(() => { if (page.faces) page.sendInspectModel(); }));
  $('#inside-another').addEventListener('click', () => page.inspect(Math.floor(Math.random() * page.faces)));

  // One list item and canvas per layer shown, kept while the layers keep their shapes (as they
  // do every epoch of a run), so that each update only redraws.
  let shownLayers = '';
  return {
    inside({ row, label, usage, face, modelLabel, layers, filters }) {
      $('#inside-model').textContent = `Showing ${modelLabel}.`;
      renderFilters($('#filters'), filters);
      drawFace($('#inside-face'), face);
      $('#inside-face-label').textContent = `${emotions[label]} · row ${count(row)} (${usage})`;
      const last = layers.length - 1;
      // Batch-norm, dropout (inactive outside training) and flatten re-show their input.
      const shown = layers.filter(({ layer }, i) => i === last || !['batch_norm', 'dropout', 'flatten'].includes(layer.type));
      const isOutput = (i) => i === shown.length - 1;
      const list = $('#activations');
      const signature = JSON.stringify(shown.map(({ layer, shape }) => [layer, shape]));
      if (signature !== shownLayers) {
        shownLayers = signature;
        list.replaceChildren(...shown.map(({ layer, shape }, i) => {
          const item = document.createElement('li');
          const caption = document.createElement('p');
          caption.textContent = `${describeLayer(layer)} → ${shape.join('×')}`;
          const view = isOutput(i) ? document.createElement('div') : Object.assign(document.createElement('canvas'), { className: 'activation' });
          item.append(caption, view);
          return item;
        }));
      }
      [...list.children].forEach((item, i) => {
        const { shape, values } = shown[i];
        if (isOutput(i)) item.lastChild.replaceChildren(probabilityBars(page.fer.softmax(values), emotions));
        else drawActivations(item.lastChild, shape, values);
      });
    },
  };
}

async function keepSection(page) {
  const { registry } = page;
  const status = $('#keep-status');
  const error = $('#keep-error');
  const forget = $('#model-forget');

  page.announceKept = (label, kept) => {
    status.textContent = kept
      ? `"${label}" is now in use, and kept in this browser for your next visit.`
      : `"${label}" is now in use, but this browser does not let the page store it: download it to keep it.`;
    forget.hidden = !kept;
  };

  $('#model-download').addEventListener('click', async () => {
    show(error, '');
    try {
      status.textContent = `Writing "${registry.currentLabel()}"…`;
      await registry.downloadCurrent($('#model-download-precision').value);
      status.textContent = `Downloading "${registry.currentLabel()}".`;
    } catch (e) {
      show(error, `Could not write "${registry.currentLabel()}" as a file: ${e.message ?? e}`);
    }
  });

  $('#model-download-onnx').addEventListener('click', () => {
    show(error, '');
    try {
      registry.downloadCurrentOnnx();
      status.textContent = `Downloading "${registry.currentLabel()}" as ONNX.`;
    } catch (e) {
      show(error, `Could not write "${registry.currentLabel()}" as ONNX: ${e.message ?? e}`);
    }
  });

  const fileInput = $('#model-file');
  fileInput.addEventListener('change', async () => {
    const files = [...fileInput.files];
    fileInput.value = '';
    if (files.length === 0) return;
    show(error, '');
    try {
      await registry.loadFile(files);
      status.textContent = `Now using "${registry.currentLabel()}".`;
    } catch (failure) {
      show(error, failure.message);
    }
  });

  forget.addEventListener('click', async () => {
    try {
      await registry.forgetSaved();
      status.textContent = 'The kept model is forgotten.';
      forget.hidden = true;
    } catch (failure) {
      show(error, `Could not forget the kept model: ${failure.message}`);
    }
  });

  try {
    const restored = await registry.restoreSaved();
    if (restored) {
      const inUse = registry.currentLabel() === restored.label;
      status.textContent = `Kept from your last visit: "${restored.label}" (trained ${new Date(restored.savedAt).toLocaleString()}). ` +
        (inUse ? 'It is the model in use.' : 'Choose it in the Model menu at the top to use it.');
      status.dataset.restored = 'true';
      forget.hidden = false;
    }
  } catch (failure) {
    show(error, failure.message);
  }
}
