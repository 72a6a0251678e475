// The contributor's workers: each a module Web Worker (../trainer.js) with its own connection.
// Events: "change" (a worker was added, removed, or reported its status), "log" (detail: {key,
// level, text}).

import { browserHost } from "./protocol.js";

export class WorkerPool extends EventTarget {
  constructor() {
    super();
    this.workers = new Map(); // key -> {key, role, project, worker, status, logs, ending}
    this.nextKey = 1;
  }

  _changed() { this.dispatchEvent(new Event("change")); }

  /** Start a worker of `role` ("trainer" or "stats") on `project` of the master at `url`. */
  add(url, project, role = "trainer", joinToken = null) {
    const key = this.nextKey++;
    const worker = new Worker(new URL("../trainer.js", import.meta.url), { type: "module", name: `mlitb ${role} ${key}` });
    const entry = { key, role, project, worker, status: { phase: "starting" }, logs: [], ending: false };
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "status") {
        entry.status = msg;
        this._changed();
      } else if (msg.type === "log") {
        entry.logs.push(msg);
        if (entry.logs.length > 50) entry.logs.shift();
        this.dispatchEvent(new CustomEvent("log", { detail: { key, ...msg } }));
      } else if (msg.type === "ended" && entry.ending) {
        this._terminate(key);
      }
    };
    worker.onerror = (event) => {
      event.preventDefault();
      entry.status = { ...entry.status, phase: "failed", message: event.message || "the worker failed to start" };
      this._changed();
    };
    worker.postMessage({ cmd: "start", url, project, role, joinToken, pageOrigin: location.origin, host: browserHost() });
    this.workers.set(key, entry);
    this._changed();
    return key;
  }

  /** Leave cleanly (close code 1000), then end the Web Worker. */
  remove(key) {
    const entry = this.workers.get(key);
    if (!entry || entry.ending) return;
    entry.ending = true;
    entry.worker.postMessage({ cmd: "stop" });
    setTimeout(() => this._terminate(key), 3000); // a worker busy computing answers late
    this._changed();
  }

  _terminate(key) {
    const entry = this.workers.get(key);
    if (!entry) return;
    entry.worker.terminate();
    this.workers.delete(key);
    this._changed();
  }

  list() { return [...this.workers.values()]; }
}
