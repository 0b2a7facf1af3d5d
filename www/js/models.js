// Which model classifies faces: one shipped with the page, or one trained or loaded by the
// user. Dispatches 'change' whenever the current model changes.
//
// Of the shipped models only the camera's first one (FIRST_MODEL) is fetched as the page
// starts; the others are listed in the menu and fetched when chosen, so the page's first
// prediction waits for one model file only.
//
// The last model trained in the tab is kept in IndexedDB, with whether it was the one in use,
// so it survives a reload. A model file that does not load leaves the current model in place.
import { withF32Decimals } from './f32.js';

/** The models shipped with the page (www/models/), in menu order. */
export const SHIPPED_MODELS = {
  fast: { label: 'Fast model', file: 'models/fast.safetensors' },
  default: { label: 'Default model', file: 'models/default.safetensors' },
};

/** The shipped model the camera starts with: the one model fetched before its first prediction. */
export const FIRST_MODEL = 'fast';

/** The shipped model photos are classified with: the most accurate one, fetched on the first photo. */
export const PHOTO_MODEL = 'default';

/** Fetches shipped model `id`'s file; resolves to its bytes. */
export async function fetchShippedModel(id) {
  const { label, file } = SHIPPED_MODELS[id];
  const response = await fetch(file);
  if (!response.ok) throw new Error(`the ${label.toLowerCase()} (${file}) is missing (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

const DATABASE = 'fer-cnn';
const STORE = 'models';
const SAVED_TRAINED_KEY = 'last-trained';
const SELECTED_KEY = 'selected';
const TRAINED_ID = 'trained';
const FILE_ID = 'file';

function request(idbRequest) {
  return new Promise((resolve, reject) => {
    idbRequest.onsuccess = () => resolve(idbRequest.result);
    idbRequest.onerror = () => reject(idbRequest.error);
  });
}

let database = null; // one connection for the page's lifetime

async function openStore(mode) {
  database ??= new Promise((resolve, reject) => {
    const open = indexedDB.open(DATABASE, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    request(open).then(resolve, reject);
  });
  return (await database).transaction(STORE, mode).objectStore(STORE);
}

const storage = {
  async get(key) { return request((await openStore('readonly')).get(key)); },
  async put(key, value) { return request((await openStore('readwrite')).put(value, key)); },
  async delete(key) { return request((await openStore('readwrite')).delete(key)); },
};

export class ModelRegistry extends EventTarget {
  constructor(fer, select, info) {
    super();
    this.fer = fer;
    this.select = select;
    this.info = info;
    this.entries = new Map(); // id -> { label, model }, for the models loaded
    this.loading = new Map(); // shipped model id -> its loading, while under way
    for (const [id, { label }] of Object.entries(SHIPPED_MODELS)) select.add(new Option(label, id));
    select.addEventListener('change', async () => {
      const chosen = select.value;
      if (!this.entries.has(chosen)) {
        select.value = this.currentId; // until the chosen model has arrived
        try {
          await this.loadShipped(chosen, { select: false });
        } catch (error) {
          this.info.textContent = `${error.message ?? error}. Still using "${this.currentLabel()}".`;
          return;
        }
      }
      this.use(chosen);
      // Only the user's own choice is remembered, not the page's start-up defaults.
      storage.put(SELECTED_KEY, chosen).catch(() => {});
    });
  }

  /**
   * Loads shipped model `id` (from `bytes`, a promise of its file's bytes, when the file is
   * being fetched already) and makes it current unless `select` is false; resolves to its
   * Model. A model already loaded is not fetched again.
   */
  async loadShipped(id, { bytes = null, select = true } = {}) {
    if (!this.entries.has(id)) {
      if (!this.loading.has(id)) {
        const loading = (bytes ?? fetchShippedModel(id)).then((file) => {
          this.add(id, SHIPPED_MODELS[id].label, this.fer.Model.fromBytes(file), { select: false });
        }).finally(() => this.loading.delete(id));
        this.loading.set(id, loading);
      }
      await this.loading.get(id);
    }
    if (select) this.use(id);
    return this.entries.get(id).model;
  }

  /// Adds (or replaces) a model; makes it current unless `select` is false.
  add(id, label, model, { select = true, exportAs = null } = {}) {
    const previous = this.entries.get(id);
    if (previous) previous.model.free();
    this.entries.set(id, { label, model, exportAs });
    let option = [...this.select.options].find((o) => o.value === id);
    if (!option) {
      option = new Option(label, id);
      this.select.add(option);
    }
    option.textContent = label;
    this.select.disabled = false;
    if (select || id === this.currentId) this.use(id);
  }

  /// Removes a model; when it was current, the camera's first model takes over.
  remove(id) {
    const entry = this.entries.get(id);
    if (!entry || Object.hasOwn(SHIPPED_MODELS, id)) return;
    this.entries.delete(id);
    [...this.select.options].find((o) => o.value === id)?.remove();
    if (this.currentId === id) this.use(FIRST_MODEL);
    entry.model.free();
  }

  use(id) {
    if (!this.entries.has(id)) return;
    this.currentId = id;
    this.select.value = id;
    const description = this.describe(id);
    const accuracy = description.metadata.publictest_accuracy;
    this.info.textContent = `${description.spec.name} · ${description.parameters.toLocaleString()} parameters` +
      (accuracy ? ` · PublicTest ${(100 * Number(accuracy)).toFixed(1)}%` : '');
    this.dispatchEvent(new Event('change'));
  }

  /// The wasm Model that classifies faces now.
  current() {
    return this.entries.get(this.currentId).model;
  }

  currentLabel() {
    return this.entries.get(this.currentId).label;
  }

  /// `describe()` of a model by id (the current one by default); undefined for an unknown id.
  describe(id = this.currentId) {
    const model = this.entries.get(id)?.model;
    return model && withF32Decimals(model.describe());
  }

  /// The current model as a `.safetensors` download with `precision` weights: 'f32', 'f16' or
  /// 'int8'. A model trained in this tab is written by its training run (`exportAs`), which
  /// re-measures the batch-norm statistics after rounding, as `fer train --int8` does.
  async downloadCurrent(precision) {
    const { model, exportAs } = this.entries.get(this.currentId);
    const description = model.describe();
    const bytes = exportAs ? await exportAs(precision) : model.toBytes(precision);
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    const suffix = precision === 'f32' ? '' : `-${precision}`;
    link.download = `fer-${description.spec.name}-${this.currentId}${suffix}.safetensors`;
    link.click();
    // The download has started from the object URL by the time the next task runs.
    setTimeout(() => URL.revokeObjectURL(link.href), 0);
  }

  /// The current model as an ONNX download (float32 weights: an int8 or f16 model's are
  /// dequantised): `pixels` [N, 1, 48, 48] grey 0-255 in, `probabilities` [N, 7] out.
  downloadCurrentOnnx() {
    const model = this.current();
    const bytes = model.toOnnx();
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    link.download = `fer-${model.describe().spec.name}-${this.currentId}.onnx`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 0);
  }

  /// Loads the model file(s) the user chose and makes the model current: one `.safetensors` or
  /// `.onnx` file (told apart by content), or an ONNX graph with the file holding its weights
  /// (PyTorch 2.x writes NAME.onnx and NAME.onnx.data), in either order. Throws an Error whose
  /// message says why the files do not load; the current model stays in place.
  async loadFile(files) {
    const chosen = Array.isArray(files) ? files : [files];
    const still = `Still using "${this.currentLabel()}".`;
    let model;
    let file;
    try {
      if (chosen.length === 1) {
        [file] = chosen;
        model = this.fer.Model.fromBytes(new Uint8Array(await file.arrayBuffer()));
      } else {
        const graphs = chosen.filter((f) => f.name.toLowerCase().endsWith('.onnx'));
        if (chosen.length !== 2 || graphs.length !== 1) {
          throw new Error('choose one model file, or an .onnx graph together with its weights file (NAME.onnx.data)');
        }
        file = graphs[0];
        const data = chosen.find((f) => f !== file);
        model = this.fer.Model.fromOnnxFiles(new Uint8Array(await file.arrayBuffer()), data.name,
          new Uint8Array(await data.arrayBuffer()));
      }
    } catch (error) {
      const names = chosen.map((f) => `"${f.name}"`).join(' and ');
      throw new Error(`${names} ${chosen.length === 1 ? 'is' : 'are'} not a model this page can load: ` +
        `${error.message ?? error}. ${still}`);
    }
    this.add(FILE_ID, `File: ${file.name}`, model);
  }

  /// Adds a model trained in the tab (safetensors bytes), makes it current and keeps it in
  /// IndexedDB in place of the previous one. Resolves to false when the browser refuses to
  /// store it (private browsing, quota): the model is then in use but will not survive a reload.
  async keepTrained(bytes, label, exportAs) {
    this.add(TRAINED_ID, label, this.fer.Model.fromBytes(bytes), { exportAs });
    try {
      await storage.put(SAVED_TRAINED_KEY, { bytes, label, savedAt: Date.now() });
      await storage.put(SELECTED_KEY, TRAINED_ID);
      return true;
    } catch {
      return false;
    }
  }

  /// Brings back the model kept by `keepTrained`, current again if it was when the page was
  /// left. Resolves to `{ label, savedAt }`, or null when nothing is stored (or the browser
  /// keeps no storage). A stored model that no longer loads (say, after an engine update) is
  /// deleted, and the Error says so.
  async restoreSaved() {
    let saved;
    let selected;
    try {
      [saved, selected] = await Promise.all([storage.get(SAVED_TRAINED_KEY), storage.get(SELECTED_KEY)]);
    } catch {
      return null;
    }
    if (!saved) return null;
    let model;
    try {
      model = this.fer.Model.fromBytes(saved.bytes);
    } catch (error) {
      await storage.delete(SAVED_TRAINED_KEY).catch(() => {});
      throw new Error(`The model kept from an earlier visit ("${saved.label}") no longer loads ` +
        `(${error.message ?? error}), so it was removed. Train or load another one.`);
    }
    this.add(TRAINED_ID, saved.label, model, { select: selected === TRAINED_ID });
    return { label: saved.label, savedAt: saved.savedAt };
  }

  /// Remembers `id` as the model in use for the next visit, as choosing it in the menu does.
  rememberSelected(id) {
    storage.put(SELECTED_KEY, id).catch(() => {});
  }

  /// The id of the model in use when the page was left, or null.
  async lastSelected() {
    return storage.get(SELECTED_KEY).catch(() => null);
  }

  /// Deletes the kept model from IndexedDB and from the menu.
  async forgetSaved() {
    await storage.delete(SAVED_TRAINED_KEY);
    this.remove(TRAINED_ID);
  }
}
