// The user's own faces and the model calibrated to them. `Captures` holds the 48x48 crops
// taken for each expression while calibrating (in memory, in capture order); `personalStore`
// keeps the calibrated model together with the captures it was fitted on in IndexedDB, so
// both survive a reload and one call deletes both. Its own database, apart from models.js's:
// deleting the user's faces must never touch anything else.

const DATABASE = 'fer-cnn-personal';
const STORE = 'personal';
const KEY = 'calibrated';

/** The captures of each expression, in the order they were taken. */
export class Captures {
  constructor(classes) {
    this.byClass = Array.from({ length: classes }, () => []);
  }

  /** Captures from `faces` (48x48 bytes each, end to end) and one label byte each. */
  static fromArrays(classes, faces, labels, facePixels) {
    const captures = new Captures(classes);
    labels.forEach((label, i) => captures.add(label, faces.slice(i * facePixels, (i + 1) * facePixels)));
    return captures;
  }

  add(label, face) { this.byClass[label].push(face); }
  remove(label, index) { this.byClass[label].splice(index, 1); }
  clear(label) { this.byClass[label] = []; }
  count(label) { return this.byClass[label].length; }
  get total() { return this.byClass.reduce((sum, faces) => sum + faces.length, 0); }

  /**
   * `{ faces, labels }` as the calibration takes them: each expression's captures in the order
   * taken, so that its last ones (the held-out share) are the last ones taken.
   */
  toArrays() {
    const labels = new Uint8Array(this.total);
    const faces = new Uint8Array(this.total * (this.byClass.find((f) => f.length)?.[0].length ?? 0));
    let i = 0;
    this.byClass.forEach((list, label) => {
      for (const face of list) {
        labels[i] = label;
        faces.set(face, i * face.length);
        i += 1;
      }
    });
    return { faces, labels };
  }
}

function request(idbRequest) {
  return new Promise((resolve, reject) => {
    idbRequest.onsuccess = () => resolve(idbRequest.result);
    idbRequest.onerror = () => reject(idbRequest.error);
  });
}

let database = null;

async function store(mode) {
  database ??= (() => {
    const open = indexedDB.open(DATABASE, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    return request(open);
  })();
  return (await database).transaction(STORE, mode).objectStore(STORE);
}

export const personalStore = {
  /** `{ modelBytes, faces, labels, report, seconds, savedAt }`, or null when nothing is kept. */
  async load() {
    return (await request((await store('readonly')).get(KEY))) ?? null;
  },

  /** Keeps the calibrated model and its captures, in place of any earlier ones. */
  async save(entry) {
    await request((await store('readwrite')).put({ ...entry, savedAt: Date.now() }, KEY));
  },

  /** Deletes the captures and the model. */
  async clear() {
    await request((await store('readwrite')).delete(KEY));
  },
};
