// Drawing for the training page: 48x48 faces, face grids, the confusion heat map, first-layer
// filters and activation maps. Everything is drawn at its natural pixel size and scaled by
// CSS (`image-rendering: pixelated`), so a 48x48 face costs one 48x48 putImageData.

// The face size and the arithmetic come from the wasm module (started by app.js first).
import { engineExports } from './engine.js';

const faceSide = () => engineExports().faceSide();
const argmax = (values) => engineExports().argmax(values);

/** Pixels in one face (48x48), as Rust defines it. */
export const facePixels = () => faceSide() ** 2;

/** A canvas showing one face (`face_u8`: 2304 grey bytes, row-major). */
export function faceCanvas(face_u8) {
  const canvas = document.createElement('canvas');
  canvas.width = faceSide();
  canvas.height = faceSide();
  canvas.className = 'face';
  drawFace(canvas, face_u8);
  return canvas;
}

export function drawFace(canvas, face_u8) {
  const image = new ImageData(faceSide(), faceSide());
  const rgba = image.data;
  for (let i = 0; i < face_u8.length; i++) {
    rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = face_u8[i];
    rgba[4 * i + 3] = 255;
  }
  canvas.getContext('2d').putImageData(image, 0, 0);
}

/** A figure of a face with a caption below; `setCaption` changes it. */
export function captionedFace(face_u8, caption) {
  const figure = document.createElement('figure');
  figure.className = 'captioned-face';
  figure.append(faceCanvas(face_u8), document.createElement('figcaption'));
  setCaption(figure, caption);
  return figure;
}

/** `tone` ('good', 'bad' or undefined) colours the face's frame, for predictions. */
export function setCaption(figure, caption, { tone, title } = {}) {
  figure.querySelector('figcaption').textContent = caption;
  figure.classList.toggle('good', tone === 'good');
  figure.classList.toggle('bad', tone === 'bad');
  figure.title = title ?? caption;
}

/** Heat colour for a share in [0, 1]: white through the accent blue. */
function heat(share) {
  const lightness = 100 - 55 * Math.min(1, Math.max(0, share));
  return `hsl(224 86% ${lightness}%)`;
}

/**
 * The confusion matrix as an HTML table (rows: true emotion, columns: predicted), each cell
 * shaded by its share of the row so that classes of any size read alike, plus each class's
 * accuracy (recall) as the last column.
 */
export function renderConfusion(table, confusion, perClass, emotions) {
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.append(Object.assign(document.createElement('th'), { textContent: 'true ↓ / predicted →', className: 'corner' }));
  for (const emotion of emotions) {
    head.append(Object.assign(document.createElement('th'), { textContent: emotion.slice(0, 3), title: emotion, scope: 'col' }));
  }
  head.append(Object.assign(document.createElement('th'), { textContent: 'accuracy', scope: 'col' }));
  const body = table.createTBody();
  confusion.forEach((row, trueClass) => {
    const total = row.reduce((sum, count) => sum + count, 0);
    const tr = body.insertRow();
    tr.append(Object.assign(document.createElement('th'), { textContent: emotions[trueClass], scope: 'row' }));
    row.forEach((count, predicted) => {
      const share = total ? count / total : 0;
      const cell = tr.insertCell();
      cell.textContent = count;
      cell.style.background = heat(share);
      if (share > 0.55) cell.classList.add('dark');
      if (predicted === trueClass) cell.classList.add('diagonal');
      cell.title = `${emotions[trueClass]} predicted as ${emotions[predicted]}: ${count} of ${total}`;
    });
    const accuracy = tr.insertCell();
    accuracy.className = 'class-accuracy';
    accuracy.innerHTML = `<span class="bar" style="width:${(100 * perClass[trueClass]).toFixed(1)}%"></span>`;
    accuracy.append(total ? `${(100 * perClass[trueClass]).toFixed(0)}%` : '–');
  });
}

/**
 * Writes `values[start..start+count]`, rows of `width` values, as grey pixels (`low` black,
 * `high` white) into the RGBA bytes `out`, from pixel `outStart`, rows `outStride` pixels apart.
 */
function toGrey(values, start, count, low, high, out, outStart, outStride, width) {
  const scale = high > low ? 255 / (high - low) : 0;
  for (let row = 0; row * width < count; row++) {
    const from = start + row * width;
    const to = Math.min(from + width, start + count);
    let o = 4 * (outStart + row * outStride);
    for (let i = from; i < to; i++, o += 4) {
      out[o] = out[o + 1] = out[o + 2] = (values[i] - low) * scale;
      out[o + 3] = 255;
    }
  }
}

function range(values, start, count) {
  let low = Infinity;
  let high = -Infinity;
  for (let i = start; i < start + count; i++) {
    const value = values[i];
    if (value < low) low = value;
    if (value > high) high = value;
  }
  return [low, high];
}

/**
 * The first convolution's filters (`{ shape: [filters, channels, k, k], values }`), one small
 * canvas each, every filter stretched to its own range so its pattern shows whatever its scale.
 */
export function renderFilters(container, filters) {
  if (!filters) {
    container.textContent = 'This model does not start with a convolution: it has no filters to show.';
    return;
  }
  const [count, channels, kernel] = filters.shape;
  const size = channels * kernel * kernel;
  // Training redraws the filters several times a second: keep the canvases when they fit.
  let canvases = [...container.querySelectorAll('canvas')];
  if (canvases.length !== count || canvases[0].height !== kernel || canvases[0].width !== kernel * channels) {
    canvases = Array.from({ length: count }, (_, f) => Object.assign(document.createElement('canvas'), {
      width: kernel * channels, height: kernel, className: 'filter', title: `filter ${f + 1}`,
    }));
    container.replaceChildren(...canvases);
  }
  canvases.forEach((canvas, f) => {
    const image = new ImageData(canvas.width, canvas.height);
    const [low, high] = range(filters.values, f * size, size);
    for (let c = 0; c < channels; c++) {
      toGrey(filters.values, f * size + c * kernel * kernel, kernel * kernel, low, high, image.data, c * kernel, canvas.width, kernel);
    }
    canvas.getContext('2d').putImageData(image, 0, 0);
  });
}

/** Short text for a layer spec (`{ type: 'conv2d', filters, kernel, ... }`). */
export function describeLayer(layer) {
  switch (layer.type) {
    case 'conv2d': return `conv ${layer.kernel}×${layer.kernel}, ${layer.filters} filters`;
    case 'max_pool': return `max-pool ${layer.window}×${layer.window}`;
    case 'avg_pool': return `average-pool ${layer.window}×${layer.window}`;
    case 'global_avg_pool': return 'global average pool';
    case 'dense': return `dense ${layer.units}`;
    case 'batch_norm': return 'batch-norm';
    case 'relu': return 'ReLU';
    case 'flatten': return 'flatten';
    case 'dropout': return `dropout ${layer.rate}`;
    default: return layer.type;
  }
}

/**
 * Draws one layer's output for one face into `canvas`: `[c, h, w]` images as a grid of maps,
 * flat vectors as rows of squares. The whole layer shares one grey scale, so weak and dead maps show as
 * such (ConvNetJS does the same).
 */
export function drawActivations(canvas, shape, values) {
  const [low, high] = range(values, 0, values.length);
  if (shape.length === 3) {
    const [channels, height, width] = shape;
    const gap = 1;
    const columns = Math.min(channels, Math.max(1, Math.floor(512 / (width + gap))));
    const rows = Math.ceil(channels / columns);
    canvas.width = columns * (width + gap) - gap;
    canvas.height = rows * (height + gap) - gap;
    const image = new ImageData(canvas.width, canvas.height);
    for (let c = 0; c < channels; c++) {
      const origin = Math.floor(c / columns) * (height + gap) * canvas.width + (c % columns) * (width + gap);
      toGrey(values, c * height * width, height * width, low, high, image.data, origin, canvas.width, width);
    }
    canvas.getContext('2d').putImageData(image, 0, 0);
    // Small maps (6x6, 3x3) are drawn bigger, so every map is about as large on screen.
    canvas.style.width = `${canvas.width * Math.max(1, Math.min(8, Math.round(24 / height)))}px`;
  } else {
    // Features as 6-pixel squares, 64 to a row.
    const width = Math.min(values.length, 64);
    const rows = Math.ceil(values.length / width);
    canvas.width = width;
    canvas.height = rows;
    const image = new ImageData(width, rows);
    toGrey(values, 0, values.length, low, high, image.data, 0, width, width);
    canvas.getContext('2d').putImageData(image, 0, 0);
    canvas.style.width = `${6 * width}px`;
  }
}

/** Horizontal bars of the seven probabilities, the most likely one marked. */
export function probabilityBars(probs, emotions) {
  const list = document.createElement('ol');
  list.className = 'probabilities';
  const best = argmax(Float32Array.from(probs));
  probs.forEach((p, k) => {
    const item = document.createElement('li');
    if (k === best) item.className = 'best';
    item.innerHTML = `<span class="name"></span><span class="track"><span class="bar" style="width:${(100 * p).toFixed(1)}%"></span></span><span class="value">${(100 * p).toFixed(0)}%</span>`;
    item.querySelector('.name').textContent = emotions[k];
    list.append(item);
  });
  return list;
}
