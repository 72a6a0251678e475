// The network: layers built from a spec, over one flat float32 parameter vector (net.js is to
// the browser what mlitb/nn/_net.py is to Python; see index.js for the API).

import { ConvLayer, PoolLayer } from "./conv.js";
import {
  DropoutLayer, FullyConnectedLayer, InputLayer, LocalResponseNormalizationLayer, MaxoutLayer,
  ReluLayer, SigmoidLayer, TanhLayer,
} from "./layers.js";
import { RegressionLayer, SoftmaxLayer, SVMLayer } from "./loss.js";
import { useSimd } from "./kernels.js";
import { Random } from "./random.js";
import { instantiate } from "./simd.js";
import { desugar, ModelFormatError, normalize, normalizeLayer, pyRepr } from "./spec.js";

export const LAYER_CLASSES = Object.fromEntries([
  InputLayer, ConvLayer, PoolLayer, FullyConnectedLayer, ReluLayer, SigmoidLayer, TanhLayer,
  MaxoutLayer, DropoutLayer, LocalResponseNormalizationLayer, SoftmaxLayer, SVMLayer, RegressionLayer,
].map((cls) => [cls.type, cls]));

/** Samples per pass through the layers, so a chunk's working set stays in cache. Measured on the
 * demo net in Chromium (2 MiB L2 per core), batch 64: chunks of 2-4 ~1,300 samples/s, 8 ~1,170,
 * 16 ~820, 32 ~680 (the first layer's im2col matrix alone is 320 KiB per sample). */
export const DEFAULT_CHUNK = 4;
/** A class added by addClass starts this improbable, so existing predictions keep their order. */
export const NEW_CLASS_BIAS = -10;

const product = (shape) => shape.reduce((a, b) => a * b, 1);

function buildLayers(defs) {
  const first = defs[0];
  let shape = [first.out_depth, first.out_sy, first.out_sx];
  const layers = defs.map((d, i) => {
    let layer;
    try {
      layer = new LAYER_CLASSES[d.type](d, shape);
    } catch (err) {
      if (err instanceof RangeError) throw new ModelFormatError(`layer ${i} (${d.type}): ${err.message}`);
      throw err;
    }
    if (layer.outShape[0] < 1) {
      throw new ModelFormatError(`layer ${i} (${d.type}): produces no output channels from an input of depth ${shape[0]}`);
    }
    shape = layer.outShape;
    return layer;
  });
  const last = defs.length - 1, loss = defs[last];
  const field = loss.type === "regression" ? "num_neurons" : "num_classes";
  if (shape[0] !== loss[field]) {
    throw new ModelFormatError(`layer ${last} (${loss.type}): field '${field}' is ${loss[field]} but its input has ${shape[0]}`);
  }
  return layers;
}

/**
 * What a spec builds, without building it (no parameters, no scratch): for the network designer.
 * Never throws. `error` is the first ModelFormatError that `new Net(spec)` would raise (the same
 * message, the engine's own) or null, with `at` the index of the layer it names: a raw index of
 * `spec` when desugaring failed (`desugared: false`), else an index into `layers`' definitions.
 * `layers` holds every desugared layer up to the first that cannot be checked or shaped:
 * {def (normalized), raw (index in spec of the definition it came from), inShape, outShape,
 * params}, shapes [C, H, W]; `raw[i]`: the index in spec that desugared layer i came from.
 */
export function describe(spec) {
  const result = { layers: [], raw: [], numParams: 0, error: null, at: null, desugared: true };
  const fail = (err) => {
    if (!(err instanceof ModelFormatError)) throw err;
    const m = /^layer (\d+)/.exec(err.message);
    if (result.error === null) { result.error = err.message; result.at = m ? Number(m[1]) : null; }
  };
  let defs;
  try {
    defs = desugar(spec);
  } catch (err) {
    fail(err);
    result.desugared = false;
    return result;
  }
  // Which definition of `spec` each desugared layer came from: desugar is a left-to-right
  // expansion, so the prefix spec[0..i] desugars to a prefix of `defs`.
  const raw = result.raw;
  spec.forEach((_, i) => { while (raw.length < desugar(spec.slice(0, i + 1)).length) raw.push(i); });
  try {
    buildLayers(normalize(spec));
  } catch (err) {
    fail(err);
  }
  let shape = null;
  for (let i = 0; i < defs.length; i++) {
    let def, layer;
    try {
      def = normalizeLayer(i, defs[i]);
      if (i === 0 && def.type !== "input") break;
      if (i === 0) shape = [def.out_depth, def.out_sy, def.out_sx];
      layer = new LAYER_CLASSES[def.type](def, shape);
    } catch {
      break; // the error above names it (or an earlier one)
    }
    if (layer.outShape.some((n) => n < 1)) break;
    const params = layer.paramShapes().reduce((sum, s) => sum + product(s), 0);
    result.layers.push({ def, raw: raw[i], inShape: shape, outShape: layer.outShape, params });
    result.numParams += params;
    shape = layer.outShape;
  }
  return result;
}

/**
 * The layers in the order they run: a relu just before a max pool runs just after it (as in
 * Python's Net). The two commute: the max of relus is the relu of the max, and the cell that
 * wins the max gets the gradient in both orders (or, if it is <= 0, none does). Pooling first
 * leaves the relu a quarter of the values. The relu that runs is made for the pooled shape.
 */
function executionOrder(layers) {
  const plan = [...layers];
  for (let i = 0; i + 1 < plan.length; i++) {
    const [relu, pool] = [plan[i], plan[i + 1]];
    if (relu instanceof ReluLayer && pool instanceof PoolLayer && pool.pad < Math.min(pool.kx, pool.ky)) {
      plan[i] = pool;
      plan[i + 1] = new ReluLayer(relu.def, pool.outShape);
    }
  }
  return plan;
}

export class Net {
  /**
   * @param spec makeLayers-style layer definitions (desugared and checked here)
   * @param options.params initial flat parameters (copied); else drawn from `seed`
   * @param options.labels class labels (default "0", "1", ...)
   * @param options.chunk samples per pass through the layers
   * @param options.simd use WebAssembly SIMD products where the browser has them
   * @param options.fma with SIMD, use relaxed SIMD's fused multiply-add where there is one
   */
  constructor(spec, { params = null, seed = null, labels = null, chunk = DEFAULT_CHUNK, simd = true, fma = true } = {}) {
    this.definitions = normalize(spec);
    this.layers = buildLayers(this.definitions);
    this.lossLayer = this.layers[this.layers.length - 1];
    this.layout = [];
    let offset = 0;
    for (const layer of this.layers) {
      for (const shape of layer.paramShapes()) {
        this.layout.push({ layer, shape, offset, size: product(shape) });
        offset += product(shape);
      }
    }
    this.numParams = offset;
    // Desugaring puts an fc layer before every loss layer, so there is a first trained layer.
    this.plan = executionOrder(this.layers);
    this.firstTrained = this.plan.findIndex((l) => l.paramShapes().length > 0);
    this.chunk = chunk;
    this.wantSimd = simd;
    this.wantFma = fma;
    this.rng = new Random(seed);
    for (const layer of this.layers) if (layer instanceof DropoutLayer) layer.random = this.rng.random;
    this._allocate(false);
    if (params === null) for (const layer of this.layers) layer.initParams(this.rng.normal);
    else this.params = params;
    this.labels = this._checkLabels(labels);
  }

  // -- memory ------------------------------------------------------------------------------
  /** One buffer holds the parameters, the gradients and every layer's scratch for a chunk: a
   * WebAssembly.Memory's when SIMD kernels run over it. Views into it are made here once, never
   * in the hot path. */
  _allocate(withInputGrad) {
    const n = this.chunk, old = this.arena ? { p: this._params, g: this._grads } : null;
    const wants = [["params", this.numParams], ["grads", this.numParams], ["x", n * this.inputSize]];
    this.plan.forEach((layer, i) => {
      const withDx = i > this.firstTrained || (withInputGrad && i > 0);
      for (const [name, size] of Object.entries(layer.buffers(n, withDx))) wants.push([[i, name], size]);
    });
    const floats = wants.reduce((sum, [, size]) => sum + Math.ceil(size / 4) * 4, 0); // 16-byte aligned
    const kernels = this.wantSimd ? instantiate(floats * 4, { fma: this.wantFma }) : null;
    this.arena = kernels ? kernels.memory.buffer : new ArrayBuffer(floats * 4);
    if (kernels) useSimd(this.arena, kernels);
    this.simd = kernels !== null;
    this.fma = kernels !== null && kernels.fused;
    for (const layer of this.plan) layer.buf = {};
    let at = 0;
    for (const [name, size] of wants) {
      const isInt = Array.isArray(name) && name[1].startsWith("i32");
      const view = new (isInt ? Int32Array : Float32Array)(this.arena, at * 4, size);
      at += Math.ceil(size / 4) * 4;
      if (Array.isArray(name)) this.plan[name[0]].buf[name[1]] = view;
      else this["_" + name] = view;
    }
    this.withInputGrad = withInputGrad;
    if (old) { this._params.set(old.p); this._grads.set(old.g); }
    for (const { layer } of this.layout) layer.bind([], []);
    for (const { layer, offset, size } of this.layout) {
      layer.params.push(this._params.subarray(offset, offset + size));
      layer.grads.push(this._grads.subarray(offset, offset + size));
    }
  }

  _checkLabels(labels) {
    const k = this.numOutputs;
    if (labels === null) return this.isClassifier ? Array.from({ length: k }, (_, i) => String(i)) : [];
    labels = Array.from(labels);
    if (!this.isClassifier) throw new ModelFormatError("labels: a regression net has no class labels");
    if (labels.length !== k || !labels.every((s) => typeof s === "string")) {
      throw new ModelFormatError(`labels: need ${k} strings, one per class, got ${pyRepr(labels)}`);
    }
    if (new Set(labels).size !== k) throw new ModelFormatError("labels: each class needs a distinct label");
    return labels;
  }

  // -- shape facts -------------------------------------------------------------------------
  /** [C, H, W] of one input sample. */
  get inputShape() { return this.layers[0].outShape; }
  get inputSize() { return product(this.inputShape); }
  get numOutputs() { return this.lossLayer.outShape[0]; }
  get isClassifier() { return this.lossLayer.type !== "regression"; }

  // -- the flat vectors --------------------------------------------------------------------
  /** All parameters: one Float32Array that the layers view (live, no copy). */
  get params() { return this._params; }
  /** Copy `values` (numParams numbers) into the parameters. */
  set params(values) {
    if (values.length !== this.numParams) {
      throw new ModelFormatError(`parameters: expected ${this.numParams} values, got shape (${values.length},)`);
    }
    this._params.set(values);
  }
  /** Summed gradients since zeroGrads(), laid out as params (live). */
  get grads() { return this._grads; }
  zeroGrads() { this._grads.fill(0); }

  /** Per-parameter [l1, l2] decay multipliers, laid out as params. */
  decayMultipliers() {
    const l1 = new Float32Array(this.numParams), l2 = new Float32Array(this.numParams);
    for (const layer of this.layers) {
      const muls = layer.decayMuls();
      this.layout.filter((e) => e.layer === layer).forEach((e, i) => {
        l1.fill(muls[i][0], e.offset, e.offset + e.size);
        l2.fill(muls[i][1], e.offset, e.offset + e.size);
      });
    }
    return [l1, l2];
  }

  // -- computation -------------------------------------------------------------------------
  _count(x) {
    const n = x.length / this.inputSize;
    if (!Number.isInteger(n)) {
      throw new RangeError(`input must hold whole samples of ${this.inputShape.join("x")} = ${this.inputSize} values, got ${x.length}`);
    }
    return n;
  }

  _checkTargets(t, n) {
    if (this.isClassifier) {
      if (t.length !== n) throw new RangeError(`targets must be ${n} class indices, got ${t.length}`);
      for (let i = 0; i < n; i++) {
        if (!Number.isInteger(t[i]) || t[i] < 0 || t[i] >= this.numOutputs) {
          throw new RangeError(`class indices must lie in [0, ${this.numOutputs}), got ${t[i]}`);
        }
      }
    } else if (t.length !== n * this.numOutputs) {
      throw new RangeError(`targets must hold ${n} x ${this.numOutputs} values, got ${t.length}`);
    }
  }

  /** Copy samples [start, start + n) of x, (N, C, H, W), into the chunk buffer (n, H, W, C). */
  _load(x, start, n) {
    const [C, H, W] = this.inputShape, buf = this._x, HW = H * W;
    for (let s = 0, src = start * C * HW; s < n; s++) {
      const base = s * HW * C;
      for (let c = 0; c < C; c++) for (let p = 0; p < HW; p++, src++) buf[base + p * C + c] = x[src];
    }
  }

  _forwardChunk(x, start, n, training) {
    this._load(x, start, n);
    let a = this._x;
    for (const layer of this.plan) a = layer.forward(a, n, training);
    return a; // (n, K)
  }

  _prepare() { for (const layer of this.plan) layer.prepare(); }

  /** Outputs (N*K): class probabilities (softmax), scores (svm) or values (regression). */
  forward(x, training = false) {
    const n = this._count(x), K = this.numOutputs, out = new Float32Array(n * K);
    this._prepare();
    for (let i = 0; i < n; i += this.chunk) {
      const m = Math.min(this.chunk, n - i);
      out.set(this._forwardChunk(x, i, m, training).subarray(0, m * K), i * K);
    }
    return out;
  }

  /** Outputs in test mode. */
  predict(x) { return this.forward(x, false); }

  _correct(out, targets, start, n) {
    if (!this.isClassifier) return 0;
    const K = this.numOutputs;
    let correct = 0;
    for (let s = 0; s < n; s++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (out[s * K + k] > out[s * K + best]) best = k;
      if (best === targets[start + s]) correct++;
    }
    return correct;
  }

  /**
   * Add the gradient of the summed loss over the batch into `grads`. `targets`: N class indices
   * (classifier) or N*K values (regression). `inputGrad`: a Float32Array of x's size to receive
   * the gradient of the loss by the input, (N, C, H, W).
   * @returns {{loss: number, correct: number, count: number}}
   */
  accumulateGradient(x, targets, { training = true, inputGrad = null } = {}) {
    const n = this._count(x);
    this._checkTargets(targets, n);
    if (inputGrad !== null && inputGrad.length !== x.length) {
      throw new RangeError(`inputGrad must have the input's ${x.length} values, got ${inputGrad.length}`);
    }
    if (inputGrad !== null && !this.withInputGrad) this._allocate(true);
    this._prepare();
    const last = this.plan.length - 1, stop = inputGrad !== null ? 1 : this.firstTrained;
    let loss = 0, correct = 0;
    for (let i = 0; i < n; i += this.chunk) {
      const m = Math.min(this.chunk, n - i);
      const out = this._forwardChunk(x, i, m, training);
      loss += this.lossLayer.loss(targets, i);
      correct += this._correct(out, targets, i, m);
      let d = this.lossLayer.buf.dx;
      for (let l = last - 1; l >= stop; l--) d = this.plan[l].backward(d, m, l > this.firstTrained || inputGrad !== null);
      if (inputGrad !== null) this._store(d, inputGrad, i, m);
    }
    return { loss, correct, count: n };
  }

  /** Copy a chunk's input gradient (n, H, W, C) out as samples [start, start + n) of (N, C, H, W). */
  _store(d, out, start, n) {
    const [C, H, W] = this.inputShape, HW = H * W;
    for (let s = 0, dst = start * C * HW; s < n; s++) {
      const base = s * HW * C;
      for (let c = 0; c < C; c++) for (let p = 0; p < HW; p++, dst++) out[dst] = d[base + p * C + c];
    }
  }

  /** Loss and correct count in test mode, without touching `grads`. */
  evaluate(x, targets) {
    const n = this._count(x);
    this._checkTargets(targets, n);
    this._prepare();
    let loss = 0, correct = 0;
    for (let i = 0; i < n; i += this.chunk) {
      const m = Math.min(this.chunk, n - i);
      const out = this._forwardChunk(x, i, m, false);
      loss += this.lossLayer.loss(targets, i);
      correct += this._correct(out, targets, i, m);
    }
    return { loss, correct, count: n };
  }

  // -- growing -----------------------------------------------------------------------------
  /**
   * Grow the output layer by one class, keeping every existing weight. The new neuron has zero
   * weights and a bias of NEW_CLASS_BIAS. Returns, for each old parameter, its index in the new
   * vector (an Int32Array), so optimizer state can follow it.
   */
  addClass(label = null) {
    if (!this.isClassifier) throw new ModelFormatError("add_class: only softmax and svm nets have classes");
    label = label === null ? String(this.labels.length) : String(label);
    if (this.labels.includes(label)) throw new ModelFormatError(`add_class: label ${pyRepr(label)} exists already`);
    const fcIndex = this.definitions.length - 2, defs = this.spec();
    defs[fcIndex].num_neurons += 1;
    defs[defs.length - 1].num_classes += 1;
    const grown = new Net(defs, { labels: [...this.labels, label], chunk: this.chunk, simd: this.wantSimd, fma: this.wantFma });
    const indexMap = new Int32Array(this.numParams);
    this.layout.forEach((old, k) => {
      const now = grown.layout[k];
      for (let i = 0; i < old.size; i++) indexMap[old.offset + i] = now.offset + i;
    });
    for (let i = 0; i < this.numParams; i++) grown._params[indexMap[i]] = this._params[i];
    const [w, b] = grown.layers[fcIndex].params, inputs = grown.layers[fcIndex].numInputs;
    w.fill(0, w.length - inputs);
    b[b.length - 1] = NEW_CLASS_BIAS;
    grown.rng = this.rng;
    for (const layer of grown.layers) if (layer instanceof DropoutLayer) layer.random = this.rng.random;
    Object.assign(this, grown);
    return indexMap;
  }

  /** The full (desugared, explicit) layer definitions; new Net(net.spec()) rebuilds it. */
  spec() { return this.definitions.map((d) => ({ ...d })); }
}
