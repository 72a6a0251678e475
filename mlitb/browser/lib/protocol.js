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

/** Close codes after which reconnecting cannot help (as every Python client: mlitb/protocol/_session.py).
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

// -- vector encodings (the header's u16 at offset 6; docs/protocol.md, "Encodings") ------------
// The same rules as mlitb/protocol/_codec.py, written so that both write the same bytes for the
// same vector: every step is one IEEE operation (Math.fround of a double quotient or product of
// two float32 values is the float32 operation), ties round to even.
export const ENCODING = { FLOAT32: 0, FLOAT16: 1, INT8: 2 };
/** A project's `training.wire` -> the encoding of its RESULT frames. */
export const WIRE_ENCODING = { float32: 0, float16: 1, int8: 2 };
const ENCODING_NAMES = ["float32", "float16", "int8"];
/** Values per int8 block, each block with one float32 scale. */
export const BLOCK = 256;
const F16_MAX = 65504;

export function resultEncoding(wire = "float32") {
  const encoding = WIRE_ENCODING[wire];
  if (encoding === undefined) throw new Error(`unknown wire kind ${JSON.stringify(wire)}`);
  return encoding;
}

/** The exact payload bytes of n values in `encoding`. */
export function payloadSize(encoding, n) {
  if (encoding === ENCODING.FLOAT32) return 4 * n;
  if (encoding === ENCODING.FLOAT16) return 2 * n;
  if (encoding === ENCODING.INT8) return 4 * Math.ceil(n / BLOCK) + n;
  throw new Error(`unknown encoding ${encoding} (0 float32, 1 float16, 2 int8)`);
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** A float32 value -> IEEE binary16 bits, to nearest, ties to even; finite values beyond
 * 65504 saturate (an infinity or NaN stays one). */
export function toHalfBits(x) {
  if (Number.isFinite(x)) x = Math.min(Math.max(x, -F16_MAX), F16_MAX);
  f32[0] = x;
  const b = u32[0], sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // the half's biased exponent
  if (e <= 0) { // a half subnormal (or zero)
    if (e < -10) return sign;
    const m = mant | 0x800000, shift = 14 - e, half = 1 << (shift - 1);
    const rem = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++; // a carry into the exponent is right
  return sign | r;
}

let halfTable = null;
/** binary16 bits -> the value (exact in float32). */
export function fromHalfBits(h) {
  const sign = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

function halves() {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = fromHalfBits(h);
  }
  return halfTable;
}

/** Round half to even (np.rint). */
export function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f; // exact: f and x are within one unit
  return d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
}

/** A Float32Array in `encoding` -> {encoding, bytes (the payload), decoded (what the receiver
 * decodes: error feedback subtracts it)}. */
export function encodeVector(vector, encoding) {
  const n = vector.length;
  if (encoding === ENCODING.FLOAT32) {
    const decoded = vector instanceof Float32Array ? vector : Float32Array.from(vector);
    return { encoding, bytes: new Uint8Array(decoded.buffer, decoded.byteOffset, 4 * n), decoded };
  }
  if (encoding === ENCODING.FLOAT16) {
    const bits = new Uint16Array(n), decoded = new Float32Array(n), table = halves();
    for (let i = 0; i < n; i++) { bits[i] = toHalfBits(vector[i]); decoded[i] = table[bits[i]]; }
    return { encoding, bytes: new Uint8Array(bits.buffer), decoded };
  }
  if (encoding !== ENCODING.INT8) throw new Error(`unknown encoding ${encoding}`);
  const blocks = Math.ceil(n / BLOCK), buf = new ArrayBuffer(4 * blocks + n);
  const scales = new Float32Array(buf, 0, blocks), q = new Int8Array(buf, 4 * blocks, n);
  const decoded = new Float32Array(n);
  for (let b = 0; b < blocks; b++) {
    const start = b * BLOCK, end = Math.min(n, start + BLOCK);
    let absmax = 0, nan = false;
    for (let i = start; i < end; i++) {
      const a = Math.abs(vector[i]);
      if (a !== a) nan = true; else if (a > absmax) absmax = a;
    }
    const scale = nan ? NaN : Math.fround(absmax / 127);
    scales[b] = scale;
    const ok = scale > 0 && scale !== Infinity;
    for (let i = start; i < end; i++) {
      let r = ok ? roundHalfEven(vector[i] / scale) : 0;
      if (r > 127) r = 127; else if (r < -127) r = -127;
      q[i] = r;
      decoded[i] = Math.fround(q[i] * scale); // 0 * NaN or 0 * Infinity: NaN, refused
    }
  }
  return { encoding, bytes: new Uint8Array(buf), decoded };
}

/** The float32 values of a payload (`buf` from `offset`, exactly the payload's bytes): a view
 * for float32, decoded copies otherwise. `name` names the frame in errors. */
export function decodeVector(buf, offset, n, encoding, name = "frame") {
  if (!(Number.isInteger(encoding) && encoding >= 0 && encoding < ENCODING_NAMES.length)) throw new Error(`${name}.encoding: unknown encoding ${encoding} (0 float32, 1 float16, 2 int8)`);
  const need = payloadSize(encoding, n);
  if (buf.byteLength - offset !== need) {
    throw new Error(`${name}.count: ${n} values in ${ENCODING_NAMES[encoding]} need a payload of ${need} bytes, got ${buf.byteLength - offset}`);
  }
  if (encoding === ENCODING.FLOAT32) return new Float32Array(buf, offset, n);
  const out = new Float32Array(n);
  if (encoding === ENCODING.FLOAT16) {
    const table = halves(), view = new DataView(buf, offset, 2 * n);
    for (let i = 0; i < n; i++) out[i] = table[view.getUint16(2 * i, true)];
    return out;
  }
  const blocks = Math.ceil(n / BLOCK), scales = new DataView(buf, offset, 4 * blocks);
  const q = new Int8Array(buf, offset + 4 * blocks, n);
  for (let b = 0; b < blocks; b++) {
    const scale = scales.getFloat32(4 * b, true);
    if (!(scale >= 0 && scale !== Infinity)) throw new Error(`${name}.scales: scale ${b} is ${scale} (int8 scales are finite and >= 0)`);
    for (let i = b * BLOCK, end = Math.min(n, i + BLOCK); i < end; i++) {
      if (q[i] === -128) throw new Error(`${name}.vector: int8 value ${i} is -128 (values are -127 to 127)`);
      out[i] = Math.fround(q[i] * scale);
    }
  }
  return out;
}

/** Error feedback (mlitb/training/_feedback.py, the same rules): the residual of what a worker's
 * compressed results lost goes out with its next result. The residual belongs to one stream of
 * results: dropped on a new connection (`reset`), another parameter count, or a result for a
 * version more than one past the last. */
export class ErrorFeedback {
  constructor() { this.reset(); }
  reset() { this.residual = null; this.version = null; }
  encode(vector, encoding, parameterVersion) {
    if (encoding === ENCODING.FLOAT32) { this.reset(); return encodeVector(vector, encoding); }
    let residual = this.residual;
    const last = this.version;
    if (!residual || residual.length !== vector.length ||
        (last !== null && !(last <= parameterVersion && parameterVersion <= last + 1))) residual = null;
    const corrected = Float32Array.from(vector);
    if (residual) for (let i = 0; i < corrected.length; i++) corrected[i] += residual[i];
    const encoded = encodeVector(corrected, encoding);
    const left = new Float32Array(corrected.length);
    let finite = true;
    for (let i = 0; i < left.length; i++) {
      left[i] = corrected[i] - encoded.decoded[i];
      if (!Number.isFinite(left[i])) finite = false;
    }
    // A non-finite result is refused by the master; it must not poison the next ones.
    this.residual = finite ? left : null;
    this.version = parameterVersion;
    return encoded;
  }
}

/** ArrayBuffer -> {parameterVersion, iteration, encoding, vector (a Float32Array: a view, no
 * copy, for float32; decoded for float16 and int8)}. */
export function decodeParameters(buf, expectedLength = null) {
  const v = new DataView(buf);
  header(v, KIND.PARAMETERS);
  const n = v.getUint32(16, true), encoding = v.getUint16(6, true);
  if (expectedLength !== null && n !== expectedLength) {
    throw new Error(`PARAMETERS frame has ${n} values, the project has ${expectedLength}`);
  }
  return { parameterVersion: v.getUint32(8, true), iteration: v.getUint32(12, true), encoding,
    vector: decodeVector(buf, 24, n, encoding, "parameters") };
}

/** What a RESULT frame's vector is: a gradient sum (`gradient` projects) or the parameter
 * delta after inner optimizer steps (`local` projects). */
export const RESULT_KIND = { GRADIENT_SUM: 1, PARAMETER_DELTA: 2 };
/** The most inner steps one result may report (a u16 in the header): a trainer stops there. */
export const MAX_STEPS = 0xffff;

/** The RESULT frame answering one work order. `steps`: inner optimizer steps taken (0 for a
 * gradient sum). `vector`: a Float32Array (encoded here in `encoding`) or what `encodeVector`
 * / `ErrorFeedback.encode` returned (sent as it is). */
export function encodeResult(vector, { parameterVersion, samples, correct, lossSum, computeSeconds,
  kind = RESULT_KIND.GRADIENT_SUM, steps = 0, encoding = ENCODING.FLOAT32 }) {
  if (!Number.isInteger(steps) || steps < 0 || steps > MAX_STEPS) throw new RangeError(`steps must be 0 to ${MAX_STEPS}, got ${steps}`);
  const encoded = vector && vector.bytes ? vector : encodeVector(vector, encoding);
  if (encoded.encoding !== encoding) throw new Error(`the vector is encoded as ${ENCODING_NAMES[encoded.encoding]}, the frame asks for ${ENCODING_NAMES[encoding]}`);
  const n = encoded.decoded.length;
  const buf = new ArrayBuffer(40 + encoded.bytes.length), v = new DataView(buf);
  v.setUint8(0, 0x4d); v.setUint8(1, 0x4c); v.setUint8(2, PROTOCOL_VERSION); v.setUint8(3, KIND.RESULT);
  v.setUint16(4, 40, true); v.setUint16(6, encoding, true);
  v.setUint32(8, parameterVersion, true); v.setUint8(12, kind); v.setUint8(13, 0);
  v.setUint16(14, steps, true);
  v.setUint32(16, samples, true); v.setUint32(20, correct, true);
  v.setFloat64(24, lossSum, true); v.setFloat32(32, computeSeconds, true);
  v.setUint32(36, n, true);
  new Uint8Array(buf, 40).set(encoded.bytes);
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
 * host: use the host we reached it at (mlitb/nodes/_data.py reachable_data_url does the same). */
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
