// Which model classifies faces: the default one shipped with the page, or one trained or
// loaded by the user. Dispatches 'change' whenever the current model changes.
export class ModelRegistry extends EventTarget {
  constructor(fer, select, info) {
    super();
    this.fer = fer;
    this.select = select;
    this.info = info;
    this.entries = new Map(); // id -> { label, model }
    select.addEventListener('change', () => this.use(select.value));
  }

  async loadDefault() {
    const response = await fetch('models/default.safetensors');
    if (!response.ok) throw new Error(`the default model is missing (HTTP ${response.status})`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    this.add('default', 'Default model', this.fer.Model.fromBytes(bytes));
  }

  /// Adds (or replaces) a model and makes it current.
  add(id, label, model) {
    const previous = this.entries.get(id);
    if (previous) previous.model.free();
    this.entries.set(id, { label, model });
    let option = [...this.select.options].find((o) => o.value === id);
    if (!option) {
      option = new Option(label, id);
      this.select.add(option);
    }
    option.textContent = label;
    this.select.disabled = false;
    this.use(id);
  }

  use(id) {
    if (!this.entries.has(id)) return;
    this.currentId = id;
    this.select.value = id;
    const description = this.current().describe();
    const accuracy = description.metadata.publictest_accuracy;
    this.info.textContent = `${description.spec.name} · ${description.parameters.toLocaleString()} parameters` +
      (accuracy ? ` · PublicTest ${(100 * Number(accuracy)).toFixed(1)}%` : '');
    this.dispatchEvent(new Event('change'));
  }

  /// The wasm Model that classifies faces now.
  current() {
    return this.entries.get(this.currentId).model;
  }
}
