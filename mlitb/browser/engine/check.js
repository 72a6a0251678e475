// Runs the numpy engine's test vectors (tests/vectors/engine.json, made by
// `python -m mlitb.nn._vectors`) through this engine, its optimizers (optim.js) and its
// augmentation (augment.js), and reports, per case and quantity, the max abs difference
// relative to scale (the max abs of the expected values).

import { shiftFlip } from "./augment.js";
import { Net } from "./index.js";
import { makeOptimizer } from "./optim.js";
import { fusedSupported, supported as simdSupported } from "./simd.js";

// Chunks of 8 and 3 samples (so batches split unevenly), with SIMD products (fused multiply-add
// and not, where there is one) and in plain JavaScript.
export const DEFAULT_MODES = [
  ...(simdSupported ? [{ chunk: 8, simd: true, fma: fusedSupported }, { chunk: 3, simd: true, fma: false }] : []),
  { chunk: 8, simd: false, fma: false }, { chunk: 3, simd: false, fma: false },
];

export function decodeFloat32(text) {
  const bytes = Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

/** max |expected - actual| / max |expected| (0 when both are all zero). */
export function relativeError(expected, actual) {
  if (expected.length !== actual.length) return Infinity;
  let diff = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  if (Number.isNaN(diff)) return Infinity;
  return diff === 0 ? 0 : diff / (scale || Number.MIN_VALUE);
}

const canonical = (v) => JSON.stringify(v, (_, x) => (x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x));

/** Make each dropout layer replay the masks numpy drew, in the engine's (n, y, x, c) order. */
function replayMasks(net, masks, n) {
  for (const [index, text] of Object.entries(masks)) {
    const layer = net.layers[Number(index)], keep = decodeFloat32(text);
    const [C, h, w] = layer.inShape;
    const order = new Float32Array(n * C * h * w);
    for (let s = 0, o = 0; s < n; s++) {
      for (let p = 0; p < h * w; p++) for (let c = 0; c < C; c++, o++) order[o] = keep[(s * C + c) * h * w + p];
    }
    let next = 0;
    layer.random = () => (order[next++] ? 1 - 1e-7 : 0);
  }
}

function runCase(c, chunk, simd, fma) {
  const net = new Net(c.spec, { params: decodeFloat32(c.params), chunk, simd, fma });
  const x = decodeFloat32(c.x);
  const targets = Array.isArray(c.targets) ? Int32Array.from(c.targets) : decodeFloat32(c.targets);
  replayMasks(net, c.masks, c.n);
  const inputGrad = new Float32Array(x.length);
  net.zeroGrads();
  const stats = net.accumulateGradient(x, targets, { training: c.training, inputGrad });
  replayMasks(net, c.masks, c.n);
  const out = net.forward(x, c.training);
  return {
    spec: canonical(net.spec()) === canonical(c.normalized) ? 0 : Infinity,
    num_params: net.numParams === c.num_params ? 0 : Infinity,
    out: relativeError(decodeFloat32(c.out), out),
    predict: relativeError(decodeFloat32(c.predict), net.predict(x)),
    loss: relativeError([c.loss], [stats.loss]),
    correct: stats.correct === c.correct && stats.count === c.n ? 0 : Infinity,
    grads: relativeError(decodeFloat32(c.grads), net.grads),
    dx: relativeError(decodeFloat32(c.dx), inputGrad),
    simd: net.simd === simd && net.fma === fma ? 0 : Infinity, // asked for and not there: fail
  };
}

function runBadSpec(b) {
  try {
    new Net(b.spec);
  } catch (err) {
    return { error: err.message === b.error ? 0 : Infinity, message: err.message };
  }
  return { error: Infinity, message: "accepted" };
}

function runAddClass(a) {
  const net = new Net(a.spec, { params: decodeFloat32(a.params), labels: a.labels });
  const x = decodeFloat32(a.x);
  const predict = relativeError(decodeFloat32(a.predict), net.predict(x));
  const map = net.addClass(a.label);
  return {
    predict,
    index_map: map.length === a.index_map.length && map.every((v, i) => v === a.index_map[i]) ? 0 : Infinity,
    params_after: relativeError(decodeFloat32(a.params_after), net.params),
    predict_after: relativeError(decodeFloat32(a.predict_after), net.predict(x)),
    spec: canonical(net.spec()) === canonical(a.normalized_after) ? 0 : Infinity,
    labels: net.labels.join() === [...a.labels, a.label].join() ? 0 : Infinity,
  };
}

/** A local round's inner steps: the optimizer alone on the mean gradients numpy stepped on
 * ("given"), or end to end, with this engine computing each step's gradient ("net"): zero the
 * gradients, accumulate the batch, step on gradient / n. Parameters after every step compared. */
function runInnerSteps(v, { chunk, simd, fma, given }) {
  const net = new Net(v.spec, { params: decodeFloat32(v.params), chunk, simd, fma });
  const [l1Mul, l2Mul] = net.decayMultipliers();
  const opt = makeOptimizer(v.optimizer, net.numParams, v.hyperparameters, { l1Mul, l2Mul });
  const x = decodeFloat32(v.x), errors = {};
  v.params_after.forEach((expected, k) => {
    let grad;
    if (given) {
      grad = decodeFloat32(v.grads[k]);
    } else {
      net.zeroGrads();
      const stats = net.accumulateGradient(x, Int32Array.from(v.targets));
      errors[`loss ${k + 1}`] = relativeError([v.loss[k]], [stats.loss]);
      grad = net.grads;
      for (let i = 0; i < grad.length; i++) grad[i] /= stats.count;
      errors[`grad ${k + 1}`] = relativeError(decodeFloat32(v.grads[k]), grad);
    }
    opt.step(net.params, grad);
    errors[`params after ${k + 1}`] = relativeError(decodeFloat32(expected), net.params);
  });
  errors.steps = opt.t === v.params_after.length ? 0 : Infinity;
  return errors;
}

/** The shift/flip transform with numpy's offsets and flips given. */
function runAugmentation(a) {
  const x = decodeFloat32(a.x), out = new Float32Array(x.length).fill(NaN);
  shiftFlip(x, out, a.n, a.shape, { dy: Int32Array.from(a.dy), dx: Int32Array.from(a.dx),
    flip: Uint8Array.from(a.flips) });
  return { out: relativeError(decodeFloat32(a.out), out) };
}

/** Every check: [{name, errors: {quantity: relative error}, ok, message?}]. Each case runs in
 * each of `modes` ({chunk, simd}); `simd: true` fails where the browser lacks wasm SIMD. */
export function runVectors(vectors, { modes = DEFAULT_MODES } = {}) {
  const tol = vectors.tolerance, rows = [];
  const row = (name, fn) => {
    let errors, message;
    try {
      ({ message, ...errors } = fn());
    } catch (err) {
      errors = { exception: Infinity };
      message = `${err.name}: ${err.message}`;
    }
    rows.push({ name, errors, ok: Object.values(errors).every((e) => e <= tol), message });
  };
  for (const c of vectors.cases) {
    for (const { chunk, simd, fma } of modes) {
      const mode = simd ? (fma ? "simd fma" : "simd") : "js";
      row(`${c.name} [chunk ${chunk}, ${mode}]`, () => runCase(c, chunk, simd, fma));
    }
  }
  vectors.bad_specs.forEach((b, i) => row(`bad spec ${i}: ${b.error}`, () => runBadSpec(b)));
  row("add_class", () => runAddClass(vectors.add_class));
  for (const v of vectors.inner_steps || []) {
    row(`inner steps: ${v.name} (given gradients)`, () => runInnerSteps(v, { given: true, chunk: 8, simd: false, fma: false }));
    for (const { chunk, simd, fma } of modes) {
      const mode = simd ? (fma ? "simd fma" : "simd") : "js";
      row(`inner steps: ${v.name} (net, chunk ${chunk}, ${mode})`, () => runInnerSteps(v, { given: false, chunk, simd, fma }));
    }
  }
  (vectors.augmentation || []).forEach((a, i) => row(
    `augmentation ${i}: shift ${a.shift}, flip ${a.flip}`, () => runAugmentation(a)));
  return rows;
}
