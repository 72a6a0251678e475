// The wire protocol of docs/protocol.md for the browser: text messages (JSON) and the binary
// frames (PARAMETERS in, RESULT out, DATA_BATCH from the data server). No I/O here; shared by
// the page and the trainer Web Workers.

export const PROTOCOL_VERSION = 2;
export const KIND = { PARAMETERS: 1, RESULT: 2, DATA_BATCH: 3 };
const HEADER = { 1: 24, 2: 40, 3: 24 };

/** Close codes (docs/protocol.md, "Close codes"). */
export const CLOSE = {
  NORMAL: 1000, GOING_AWAY: 1001, PROTOCOL_ERROR: 1002, UNSUPPORTED_DATA: 1003,
  ABNORMAL: 1006, POLICY_VIOLATION: 1008, MESSAGE_TOO_BIG: 1009, INTERNAL_ERROR: 1011,
  VERSION_MISMATCH: 4000, HELLO_REQUIRED: 4001, NO_PROJECT: 4002, REMOVED: 4003,
  PROJECT_DELETED: 4004, TOO_MANY_ERRORS: 4005, TIMED_OUT: 4006, JOIN_REFUSED: 4007,
  TOO_MANY_CONNECTIONS: 4008,
};
const CLOSE_NAMES = Object.fromEntries(Object.entries(CLOSE).map(([k, v]) => [v, k]));
CLOSE_NAMES[1005] = "NO_STATUS";

/** Close codes after which reconnecting cannot help (as the Python node: nodes/_worker.py).
 * Everything else (1001 shutdown, 1006 dropped, 1011, 4006 timed out, ...) reconnects. */
export const FINAL_CLOSE_CODES = new Set([
  CLOSE.VERSION_MISMATCH, CLOSE.HELLO_REQUIRED, CLOSE.NO_PROJECT, CLOSE.POLICY_VIOLATION,
  CLOSE.REMOVED, CLOSE.PROJECT_DELETED, CLOSE.TOO_MANY_ERRORS, CLOSE.PROTOCOL_ERROR,
  CLOSE.UNSUPPORTED_DATA, CLOSE.MESSAGE_TOO_BIG, CLOSE.JOIN_REFUSED,
]);

export function describeClose(code, reason) {
  const text = `close code ${code} (${CLOSE_NAMES[code] || "unknown"})`;
  return reason ? `${text}: ${reason}` : text;
}

/** A `host` for the hello: "Chrome 126 on Linux", at most 128 printable characters. */
export function browserHost() {
  const nav = globalThis.navigator || {};
  const ua = nav.userAgent || "";
  let name = "Browser", version = "";
  const brands = nav.userAgentData && nav.userAgentData.brands;
  const brand = brands && brands.find((b) => !/Not.?A.?Brand|Chromium/i.test(b.brand)) ||
    brands && brands.find((b) => /Chromium/i.test(b.brand));
  if (brand) { name = brand.brand; version = brand.version; } else {
    for (const [re, label] of [[/Firefox\/(\d+)/, "Firefox"], [/Edg\/(\d+)/, "Edge"],
      [/Chrom(?:e|ium)\/(\d+)/, "Chrome"], [/Version\/(\d+).*Safari/, "Safari"]]) {
      const m = ua.match(re);
      if (m) { name = label; version = m[1]; break; }
    }
  }
  const platform = (nav.userAgentData && nav.userAgentData.platform) ||
    (/Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS" :
      /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "");
  const text = `${name}${version ? " " + version : ""}${platform ? " on " + platform : ""}`;
  return text.replace(/[^\x20-\x7e]/g, "").trim().slice(0, 128) || "browser";
}

export function hello(role, { project = null, token = null, joinToken = null, host = browserHost() } = {}) {
  const message = { type: "hello", protocol: PROTOCOL_VERSION, role, client: "browser", host };
  if (role !== "operator") {
    message.project = project;
    if (joinToken) message.join_token = joinToken; // only for projects that need one
  } else if (token) message.token = token;
  return JSON.stringify(message);
}

function header(view, kind) {
  if (view.byteLength < 8 || view.getUint8(0) !== 0x4d || view.getUint8(1) !== 0x4c) {
    throw new Error("not an mlitb frame (bad magic)");
  }
  if (view.getUint8(2) !== PROTOCOL_VERSION) throw new Error(`frame of protocol version ${view.getUint8(2)}`);
  if (view.getUint8(3) !== kind) throw new Error(`frame of kind ${view.getUint8(3)}, expected ${kind}`);
  if (view.getUint16(4, true) !== HEADER[kind]) throw new Error("bad header length");
  return HEADER[kind];
}

/** ArrayBuffer -> {parameterVersion, iteration, vector (a Float32Array view, no copy)}. */
export function decodeParameters(buf, expectedLength = null) {
  const v = new DataView(buf);
  header(v, KIND.PARAMETERS);
  const n = v.getUint32(16, true);
  if (buf.byteLength !== 24 + 4 * n) throw new Error(`PARAMETERS frame of ${buf.byteLength} bytes for ${n} values`);
  if (expectedLength !== null && n !== expectedLength) {
    throw new Error(`PARAMETERS frame has ${n} values, the project has ${expectedLength}`);
  }
  return { parameterVersion: v.getUint32(8, true), iteration: v.getUint32(12, true),
    vector: new Float32Array(buf, 24, n) };
}

/** What a RESULT frame's vector is: a gradient sum (`gradient` projects) or the parameter
 * delta after inner optimizer steps (`local` projects). */
export const RESULT_KIND = { GRADIENT_SUM: 1, PARAMETER_DELTA: 2 };
/** The most inner steps one result may report (a u16 in the header): a trainer stops there. */
export const MAX_STEPS = 0xffff;

/** The RESULT frame answering one work order. `steps`: inner optimizer steps taken (0 for a
 * gradient sum). */
export function encodeResult(vector, { parameterVersion, samples, correct, lossSum, computeSeconds,
  kind = RESULT_KIND.GRADIENT_SUM, steps = 0 }) {
  if (!Number.isInteger(steps) || steps < 0 || steps > MAX_STEPS) throw new RangeError(`steps must be 0 to ${MAX_STEPS}, got ${steps}`);
  const buf = new ArrayBuffer(40 + 4 * vector.length), v = new DataView(buf);
  v.setUint8(0, 0x4d); v.setUint8(1, 0x4c); v.setUint8(2, PROTOCOL_VERSION); v.setUint8(3, KIND.RESULT);
  v.setUint16(4, 40, true); v.setUint16(6, 0, true);
  v.setUint32(8, parameterVersion, true); v.setUint8(12, kind); v.setUint8(13, 0);
  v.setUint16(14, steps, true);
  v.setUint32(16, samples, true); v.setUint32(20, correct, true);
  v.setFloat64(24, lossSum, true); v.setFloat32(32, computeSeconds, true);
  v.setUint32(36, vector.length, true);
  new Float32Array(buf, 40).set(vector);
  return buf;
}

/** A DATA_BATCH body -> {ids, labels, pixels, shape: [C, H, W]} (typed-array views). */
export function decodeDataBatch(buf) {
  const v = new DataView(buf);
  const h = header(v, KIND.DATA_BATCH);
  const n = v.getUint32(8, true);
  const shape = [v.getUint16(12, true), v.getUint16(14, true), v.getUint16(16, true)];
  const size = shape[0] * shape[1] * shape[2];
  if (buf.byteLength !== h + n * (8 + size)) throw new Error(`DATA_BATCH of ${buf.byteLength} bytes for ${n} vectors`);
  return { ids: new Uint32Array(buf, h, n), labels: new Uint32Array(buf, h + 4 * n, n),
    pixels: new Uint8Array(buf, h + 8 * n, n * size), shape };
}

/** Ids -> the data server's id-list text ("0-499,700,702"), runs kept in the given order. */
export function formatIds(ids) {
  const parts = [];
  for (let i = 0; i < ids.length;) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j] + 1) j++;
    parts.push(j > i ? `${ids[i]}-${ids[j]}` : `${ids[i]}`);
    i = j + 1;
  }
  return parts.join(",");
}

const LOOPBACK = /^(localhost|127(\.\d+){3}|\[?::1\]?|0\.0\.0\.0|\[?::\]?)$/i;
export const isLoopback = (host) => LOOPBACK.test(host);

/** A URL announced as loopback (or 0.0.0.0) by a server on another machine means that server's
 * host: use the host we reached it at (nodes/_data.py reachable_data_url does the same). */
export function reachable(url, viaHost) {
  let u;
  try { u = new URL(url); } catch { return url; }
  if (!isLoopback(u.hostname) || isLoopback(viaHost)) return url;
  u.hostname = viaHost;
  return u.toString().replace(/\/$/, "");
}

/** Whether two base URLs name the same server port (one server seen under two names, e.g. the
 * data server that served this page, announced by the master under another host name). */
export function sameServer(a, b) {
  if (!a || !b) return false;
  try {
    const [x, y] = [new URL(a), new URL(b)];
    const port = (u) => u.port || (u.protocol === "https:" ? "443" : "80");
    return x.protocol === y.protocol && port(x) === port(y);
  } catch { return false; }
}
