// The one protocol both workers speak. The page sends requests `{id, type, ...message}`; the
// worker answers each with `{id, ok: true, ...result}` or `{id, ok: false, message}`, and may
// send events `{event, ...payload}` at any time (progress while a long request runs).

const messageOf = (error) => error?.message ?? String(error);

/** Page side: `request(type, message, transfer)` resolves to the worker's reply; events go to `onEvent`. */
export class WorkerClient {
  constructor(url, { onEvent = () => {}, onCrash = () => {} } = {}) {
    this.worker = new Worker(url, { type: 'module' });
    this.pending = new Map();
    this.nextId = 0;
    this.worker.onmessage = ({ data }) => {
      if (data.event) {
        onEvent(data);
        return;
      }
      const { id, ok, message, ...result } = data;
      const { resolve, reject } = this.pending.get(id);
      this.pending.delete(id);
      if (ok) resolve(result);
      else reject(new Error(message));
    };
    this.worker.onerror = (event) => {
      event.preventDefault();
      const error = new Error(`the worker stopped: ${event.message ?? 'it did not load'}`);
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
      onCrash(error);
    };
  }

  request(type, message = {}, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, type, ...message }, transfer);
    });
  }
}

/** Worker side: answers each request with `handlers[type](message)` (sync or async); a throw is the error reply. */
export function serve(handlers, ready = Promise.resolve()) {
  self.onmessage = async ({ data: { id, type, ...message } }) => {
    try {
      await ready;
      const handler = handlers[type];
      if (!handler) throw new Error(`unknown request '${type}'`);
      const { transfer = [], ...result } = (await handler(message)) ?? {};
      self.postMessage({ id, ok: true, ...result }, transfer);
    } catch (error) {
      self.postMessage({ id, ok: false, message: messageOf(error) });
    }
  };
}

/** Worker side: an event for the page, outside any reply. */
export function emit(event, payload = {}, transfer = []) {
  self.postMessage({ event, ...payload }, transfer);
}
