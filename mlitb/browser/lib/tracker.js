// A tracker (role "tracker"): keeps the latest parameters of one project in a network on the
// page, for predictions. It receives a PARAMETERS frame on joining and after every optimizer
// step, and project_changed when the network changes; it sends nothing.
//
// Events: "change" (the tracker's state or parameters changed).

import { Net } from "../engine/index.js";
import { CLOSE, FINAL_CLOSE_CODES, decodeParameters, describeClose, hello } from "./protocol.js";

/** JSON with sorted keys: the same definitions compare equal whatever their key order. */
const canonical = (v) => JSON.stringify(v, (k, x) => (x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]])) : x));
const same = (a, b) => canonical(a) === canonical(b);

export class Tracker extends EventTarget {
  constructor(url, project, joinToken = null) {
    super();
    this.url = url;
    this.project = project;
    this.joinToken = joinToken;
    this.state = "connecting"; // connecting | tracking | waiting | stopped
    this.message = "";
    this.info = null;
    this.net = null;
    this.labels = [];
    this.version = null;
    this.iteration = null;
    this.hasParams = false;
    this.attempt = 0;
    this.closed = false;
    this._connect();
  }

  _change(changes) {
    Object.assign(this, changes);
    this.dispatchEvent(new Event("change"));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(CLOSE.NORMAL, "the page stopped tracking");
    this.ws = null;
  }

  _connect() {
    if (this.closed) return;
    this._change({ state: "connecting", message: `connecting to ${this.url}` });
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let welcomed = false, error = null, bye = null;
    ws.onopen = () => ws.send(hello("tracker", { project: this.project, joinToken: this.joinToken }));
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      try {
        if (typeof event.data !== "string") {
          if (welcomed) this._onParameters(decodeParameters(event.data, this.info.parameter_count));
          return;
        }
        const msg = JSON.parse(event.data);
        if (msg.type === "welcome") {
          welcomed = true;
          this.attempt = 0;
          this._apply(msg.project);
          this._change({ state: "tracking", message: "" });
        } else if (msg.type === "project_changed") {
          this._apply(msg.project);
        } else if (msg.type === "error") {
          error = msg.message;
        } else if (msg.type === "bye") {
          bye = msg;
        }
      } catch (err) {
        this._change({ message: `ignored an invalid message from the master: ${err.message}` });
      }
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      const text = describeClose(event.code, (bye && (bye.message || bye.reason)) || error || event.reason);
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this._change({ state: "stopped", message: `the master closed the tracker: ${text}` });
        return;
      }
      const delay = Math.min(10, 2 ** Math.min(this.attempt++, 10)) * (0.5 + 0.5 * Math.random());
      const why = welcomed ? `the connection closed (${text})` : `cannot reach the master at ${this.url}`;
      this._change({ state: "waiting", message: `${why}; reconnecting in ${delay.toFixed(1)} s` });
      this.timer = setTimeout(() => this._connect(), delay * 1000);
    };
  }

  /** Build the network for `info`. When the output layer only grew (new labels), grow the
   * current one the way the master does (Net.addClass), so predictions go on with the grown
   * parameters before the next PARAMETERS frame, which may not come while nobody trains. */
  _apply(info) {
    const old = this.info;
    if (old && same(old.spec, info.spec) && same(old.labels, info.labels)) {
      this._change({ info });
      return;
    }
    let net = null;
    if (this.net && this.hasParams && old && info.labels.length > old.labels.length &&
        same(info.labels.slice(0, old.labels.length), old.labels)) {
      try {
        for (const label of info.labels.slice(old.labels.length)) this.net.addClass(label);
        if (same(this.net.spec(), info.spec) && this.net.numParams === info.parameter_count) net = this.net;
      } catch { net = null; }
    }
    const keep = net !== null;
    if (!keep) net = new Net(info.spec);
    this._change({ info, net, labels: [...info.labels], hasParams: keep && this.hasParams });
  }

  _onParameters(frame) {
    this.net.params = frame.vector;
    this._change({ version: frame.parameterVersion, iteration: frame.iteration, hasParams: true });
  }

  /** Class probabilities (softmax) or scores of one input (C*H*W floats). */
  predict(x) {
    const out = this.net.predict(x);
    return Array.from(out, (p, k) => ({ label: this.labels[k] ?? String(k), p }));
  }
}
