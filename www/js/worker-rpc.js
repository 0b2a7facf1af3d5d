// The one protocol both workers speak. The page sends requests `{id, type, ...message}`; the
// worker answers each with `{id, ok: true, ...result}` or `{id, ok: false, message}`, and may
// send events `{event, ...payload}` at any time (progress while a long request runs).

import { engineForWorker } from './engine.js';

const messageOf = (error) => error?.message ?? String(error);

/** Why a request failed when the worker itself stopped, rather than the request's handler. */
export class WorkerCrash extends Error {
  constructor(message) {
    super(message);
    this.name = 'WorkerCrash';
  }
}

/**
 * Page side: `request(type, message, transfer)` resolves to the worker's reply; events go to
 * `onEvent`. The worker starts at the first request (or `start()`), and is first sent the
 * page's compiled engine (engine.js), which it instantiates instead of downloading its own.
 * An error the worker did not handle is a crash: the worker is terminated (its state can no
 * longer be trusted), every request waiting or made later fails with a WorkerCrash, and
 * `onCrash(error)` is called once, before those failures are seen.
 */
export class WorkerClient {
  constructor(url, { onEvent = () => {}, onCrash = () => {} } = {}) {
    this.url = url;
    this.onEvent = onEvent;
    this.onCrash = onCrash;
    this.worker = null;
    this.started = null; // resolves once the worker has been sent the engine
    this.pending = new Map();
    this.nextId = 0;
    this.crashed = null;
  }

  /** Starts the worker, if it has not started yet; resolves once it has the engine. */
  start() {
    this.started ??= (async () => {
      this.worker = new Worker(this.url, { type: 'module' });
      this.worker.onmessage = ({ data }) => this.received(data);
      this.worker.onerror = (event) => {
        event.preventDefault();
        this.crash(new WorkerCrash(`the worker stopped: ${event.message || 'it did not load'}`));
      };
      this.worker.postMessage({ engine: await engineForWorker() });
    })();
    return this.started;
  }

  received(data) {
    if (data.event) {
      this.onEvent(data);
      return;
    }
    const { id, ok, message, ...result } = data;
    const waiting = this.pending.get(id);
    if (!waiting) return; // answered already, by a crash
    this.pending.delete(id);
    if (ok) waiting.resolve(result);
    else waiting.reject(new Error(message));
  }

  crash(error) {
    if (this.crashed) return;
    this.crashed = error;
    this.worker?.terminate();
    this.onCrash(error);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }

  request(type, message = {}, transfer = []) {
    if (this.crashed) return Promise.reject(this.crashed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Requests keep their order: each waits on the same start.
      this.start().then(() => {
        if (this.crashed) return; // rejected by the crash already
        this.worker.postMessage({ id, type, ...message }, transfer);
      }, (error) => this.crash(new WorkerCrash(`the worker could not start: ${error?.message ?? error}`)));
    });
  }
}

/** Worker side: answers each request with `handlers[type](message)` (sync or async); a throw is the error reply. */
export function serve(handlers, ready = Promise.resolve()) {
  self.onmessage = async ({ data }) => {
    if (data.engine) return; // the page's engine, taken by engine.js's loadEngine
    const { id, type, ...message } = data;
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
