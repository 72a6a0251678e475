// The page's own connection to the master: role "operator" without a token, which may list
// projects, subscribe to status snapshots and download models (docs/protocol.md, "Who may send
// what"). It reconnects with backoff after a drop and tells the page when the master is
// unreachable. With a token (the operator view) the same link may send every operator request;
// a token the master refuses (close 1008) ends it in state "refused": retrying cannot help.
//
// Events (EventTarget): "state" (detail: {state, message, retryAt}), "status" (detail: the
// status message), "welcome" (detail: the welcome).

import { CLOSE, describeClose, hello } from "./protocol.js";

const REQUEST_TIMEOUT_MS = 30_000;

export class MasterLink extends EventTarget {
  constructor(url, { token = null } = {}) {
    super();
    this.url = url;
    this.token = token;
    this.closed = false;
    this.state = "connecting"; // connecting | connected | unreachable | refused | closed
    this.message = "";
    this.retryAt = null;
    this.welcome = null;
    this.ws = null;
    this.pending = new Map(); // request_id -> {resolve, reject, timer}
    this.nextId = 1;
    this.attempt = 0;
    this.subscription = null; // {project, interval}
    this.timer = null;
  }

  start() { this._connect(); return this; }

  _set(state, message, retryAt = null) {
    this.state = state;
    this.message = message;
    this.retryAt = retryAt;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, message, retryAt } }));
  }

  _connect() {
    clearTimeout(this.timer);
    this._set("connecting", `connecting to ${this.url}`);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._dropped(`the master URL ${this.url} is not valid: ${err.message}`);
      return;
    }
    this.ws = ws;
    let welcomed = false, error = null;
    ws.onopen = () => ws.send(hello("operator", { token: this.token }));
    ws.onmessage = (event) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      if (!welcomed) {
        if (msg.type === "welcome") {
          welcomed = true;
          this.attempt = 0;
          this.welcome = msg;
          this._set("connected", `connected to ${this.url} (mlitb ${msg.server_version})`);
          this.dispatchEvent(new CustomEvent("welcome", { detail: msg }));
          if (this.subscription) this._send(this._subscribeMessage());
        } else if (msg.type === "error") {
          error = msg.message;
        }
        return;
      }
      this._onMessage(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.welcome = null;
      for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new Error("the connection to the master closed")); }
      this.pending.clear();
      if (this.closed) return;
      if (!welcomed && event.code === CLOSE.POLICY_VIOLATION) {
        this._set("refused", `the master refused the operator token: ${error || event.reason || "wrong token"}`);
        return;
      }
      const why = welcomed ? `the connection to the master closed (${describeClose(event.code, error || event.reason)})`
        : error ? `the master refused this page: ${error}`
        : `cannot reach the master at ${this.url}`;
      this._dropped(why);
    };
  }

  _dropped(why) {
    const delay = Math.min(10, 2 ** Math.min(this.attempt, 10)) * (0.75 + 0.25 * Math.random());
    this.attempt++;
    this._set("unreachable", why, Date.now() + delay * 1000);
    this.timer = setTimeout(() => this._connect(), delay * 1000);
  }

  /** Close for good (an operator session the tab forgets). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this._set("closed", "closed");
  }

  /** Whether the master accepted this link's operator token. */
  get authorized() { return Boolean(this.welcome && this.welcome.authorized); }

  /** Try again now instead of waiting for the backoff. */
  retryNow() { if (this.state === "unreachable") this._connect(); }

  _onMessage(msg) {
    if (msg.type === "status") {
      this.dispatchEvent(new CustomEvent("status", { detail: msg }));
      return;
    }
    const waiting = msg.request_id ? this.pending.get(msg.request_id) : null;
    if (!waiting) return;
    this.pending.delete(msg.request_id);
    clearTimeout(waiting.timer);
    if (msg.type === "error") {
      const err = new Error(msg.message);
      err.code = msg.code;
      waiting.reject(err);
    } else {
      waiting.resolve(msg);
    }
  }

  _send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.welcome) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** Send a request; resolves with the reply (projects, model, ack) or rejects with the error. */
  request(message) {
    const requestId = `b-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this._send({ ...message, request_id: requestId })) {
        reject(new Error(`not connected to the master (${this.message})`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new Error("the master did not answer in time"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(requestId, { resolve, reject, timer });
    });
  }

  listProjects() { return this.request({ type: "list_projects" }).then((m) => m.projects); }
  listZoo() { return this.request({ type: "list_zoo" }).then((m) => m.entries); }
  getModel(project, format) { return this.request({ type: "get_model", project, format }); }

  _subscribeMessage() {
    return { type: "subscribe", request_id: `s-${this.nextId++}`, project: this.subscription.project,
      interval: this.subscription.interval };
  }

  /** Status snapshots of one project (null: all), kept across reconnections. */
  subscribe(project, interval = 1) {
    this.subscription = { project, interval };
    this._send(this._subscribeMessage());
  }
}

/**
 * One operator request that needs the operator token (e.g. create_project), on a connection of
 * its own: the page's link has no token. Resolves with the answer or rejects with the master's
 * error message.
 */
export function operatorRequest(url, token, message) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => { ws.close(); reject(new Error("the master did not answer in time")); },
      REQUEST_TIMEOUT_MS);
    const finish = (fn, value) => { clearTimeout(timer); ws.close(1000); fn(value); };
    let welcomed = false;
    ws.onopen = () => ws.send(hello("operator", { token }));
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(timer);
      reject(new Error(`the connection closed (${describeClose(event.code, event.reason)})`));
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "error") { finish(reject, new Error(msg.message)); return; }
      if (!welcomed && msg.type === "welcome") {
        welcomed = true;
        if (!msg.authorized) { finish(reject, new Error("this needs the operator token")); return; }
        ws.send(JSON.stringify({ ...message, request_id: "zoo-1" }));
        return;
      }
      if (msg.request_id === "zoo-1") finish(resolve, msg);
    };
  });
}
