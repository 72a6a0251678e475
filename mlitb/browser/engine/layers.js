// The layers without a window: input, fc, the activations, maxout, dropout and lrn.
//
// Inside the engine a chunk of n samples is channels last, (n, H, W, C), in one Float32Array;
// a layer's shapes are [C, H, W] as in Python. A layer declares the scratch it needs for a chunk
// (`buffers(n)`); the net hands it views into one arena (`this.buf`) and binds its parameter and
// gradient views (`bind`). forward returns its output buffer, backward its input-gradient
// buffer, both reused on the next call. backward ADDS parameter gradients into `this.grads`.

import { gemmNN, gemmNT, gemmTN } from "./kernels.js";

export class Layer {
  static type = "";

  constructor(def, inShape) {
    this.def = def;
    this.inShape = inShape;
    this.outShape = inShape;
    this.params = [];
    this.grads = [];
    this.buf = {};
  }

  get type() { return this.constructor.type; }
  get inSize() { return this.inShape[0] * this.inShape[1] * this.inShape[2]; }
  get outSize() { return this.outShape[0] * this.outShape[1] * this.outShape[2]; }

  /** Shapes of the parameter arrays, in their order in the flat vector. */
  paramShapes() { return []; }
  /** [l1, l2] decay multipliers of each parameter array. */
  decayMuls() { return []; }
  bind(params, grads) { this.params = params; this.grads = grads; this.seen = null; }
  /** Fill the parameters with ConvNetJS's initial distribution; `normal()` draws N(0, 1). */
  initParams(normal) {} // eslint-disable-line no-unused-vars
  /** Float32 scratch sizes for a chunk of n samples ({name: count}); `withDx`: the input
   * gradient is wanted. Int32 buffers are named with an "i32" prefix. */
  buffers(n, withDx) { return withDx ? { y: n * this.outSize, dx: n * this.inSize } : { y: n * this.outSize }; }
  /** Once per public call, before any forward: derive what the parameters imply. */
  prepare() {}

  /** Whether the weights (params[0]) differ from those seen by the last call that asked; a copy
   * is kept to tell. Comparing is several times cheaper than rearranging them (batch 1). */
  weightsChanged() {
    const w = this.params[0];
    if (this.seen) {
      const seen = this.seen;
      let i = 0;
      while (i < w.length && w[i] === seen[i]) i++;
      if (i === w.length) return false;
      seen.set(w);
      return true;
    }
    this.seen = Float32Array.from(w);
    return true;
  }
  forward(x, n, training) { throw new Error("not implemented"); } // eslint-disable-line no-unused-vars
  /** The input gradient (unless `withDx` is false); adds the parameter gradients. */
  backward(dy, n, withDx) { throw new Error("not implemented"); } // eslint-disable-line no-unused-vars
}

export class InputLayer extends Layer {
  static type = "input";
  buffers() { return {}; }
  forward(x) { return x; }
  backward(dy) { return dy; }
}

const normalFill = (a, normal, scale) => { for (let i = 0; i < a.length; i++) a[i] = normal() * scale; };

/** y = W x + b, W of shape (num_neurons, C*H*W) over inputs in (C, H, W) order. Inside, the
 * input is (H, W, C): `prepare` permutes W's columns once per call (identity for 1x1 inputs). */
export class FullyConnectedLayer extends Layer {
  static type = "fc";

  constructor(def, inShape) {
    super(def, inShape);
    this.numInputs = this.inSize;
    this.outShape = [def.num_neurons, 1, 1];
    this.spatial = inShape[1] * inShape[2] > 1;
  }

  paramShapes() { return [[this.outShape[0], this.numInputs], [this.outShape[0]]]; }
  decayMuls() { return [[this.def.l1_decay_mul, this.def.l2_decay_mul], [0, 0]]; }

  initParams(normal) {
    normalFill(this.params[0], normal, Math.sqrt(1 / this.numInputs));
    this.params[1].fill(this.def.bias_pref);
  }

  buffers(n, withDx) {
    const sizes = super.buffers(n, withDx);
    if (this.spatial) { sizes.wh = this.outSize * this.numInputs; sizes.dwh = sizes.wh; }
    return sizes;
  }

  /** (C, H, W) column order -> (H, W, C). */
  prepare() {
    if (!this.spatial) { this.wh = this.params[0]; return; }
    if (!this.weightsChanged()) return;
    const [C, H, W] = this.inShape, w = this.params[0], wh = this.buf.wh, m = this.numInputs;
    for (let o = 0; o < this.outShape[0]; o++) {
      const base = o * m;
      for (let c = 0, src = base; c < C; c++) {
        for (let p = 0; p < H * W; p++, src++) wh[base + p * C + c] = w[src];
      }
    }
    this.wh = wh;
  }

  forward(x, n) {
    const out = this.outShape[0], y = this.buf.y, b = this.params[1];
    this.x = x;
    gemmNT(n, out, this.numInputs, x, this.wh, y);
    for (let s = 0; s < n; s++) for (let o = 0; o < out; o++) y[s * out + o] += b[o];
    return y;
  }

  backward(dy, n, withDx) {
    const out = this.outShape[0], m = this.numInputs, [dw, db] = this.grads;
    for (let s = 0; s < n; s++) for (let o = 0; o < out; o++) db[o] += dy[s * out + o];
    if (!this.spatial) {
      gemmTN(out, m, n, dy, this.x, dw);
    } else {
      const dwh = this.buf.dwh, [C, H, W] = this.inShape;
      dwh.fill(0);
      gemmTN(out, m, n, dy, this.x, dwh);
      for (let o = 0; o < out; o++) {
        const base = o * m;
        for (let c = 0, dst = base; c < C; c++) {
          for (let p = 0; p < H * W; p++, dst++) dw[dst] += dwh[base + p * C + c];
        }
      }
    }
    if (!withDx) return null;
    gemmNN(n, m, out, dy, this.wh, this.buf.dx);
    return this.buf.dx;
  }
}

export class ReluLayer extends Layer {
  static type = "relu";

  forward(x, n) {
    const y = this.buf.y, len = n * this.outSize;
    for (let i = 0; i < len; i++) { const v = x[i]; y[i] = v > 0 ? v : 0; }
    return y;
  }

  backward(dy, n) { // ConvNetJS: no gradient where the output is <= 0
    const y = this.buf.y, dx = this.buf.dx, len = n * this.outSize;
    for (let i = 0; i < len; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
    return dx;
  }
}

export class SigmoidLayer extends Layer {
  static type = "sigmoid";

  forward(x, n) {
    const y = this.buf.y, len = n * this.outSize;
    for (let i = 0; i < len; i++) y[i] = 1 / (1 + Math.exp(-x[i]));
    return y;
  }

  backward(dy, n) {
    const y = this.buf.y, dx = this.buf.dx, len = n * this.outSize;
    for (let i = 0; i < len; i++) dx[i] = dy[i] * y[i] * (1 - y[i]);
    return dx;
  }
}

export class TanhLayer extends Layer {
  static type = "tanh";

  forward(x, n) {
    const y = this.buf.y, len = n * this.outSize;
    for (let i = 0; i < len; i++) y[i] = Math.tanh(x[i]);
    return y;
  }

  backward(dy, n) {
    const y = this.buf.y, dx = this.buf.dx, len = n * this.outSize;
    for (let i = 0; i < len; i++) dx[i] = dy[i] * (1 - y[i] * y[i]);
    return dx;
  }
}

/** Max over consecutive groups of `group_size` channels; leftover channels are dropped. */
export class MaxoutLayer extends Layer {
  static type = "maxout";

  constructor(def, inShape) {
    super(def, inShape);
    this.group = def.group_size;
    this.outShape = [Math.floor(inShape[0] / this.group), inShape[1], inShape[2]];
  }

  buffers(n, withDx) { return { ...super.buffers(n, withDx), i32switch: n * this.outSize }; }

  forward(x, n) {
    const C = this.inShape[0], Co = this.outShape[0], g = this.group;
    const y = this.buf.y, sw = this.buf.i32switch, pixels = n * this.inShape[1] * this.inShape[2];
    for (let p = 0, o = 0; p < pixels; p++) {
      for (let q = 0; q < Co; q++, o++) {
        const base = p * C + q * g;
        let best = x[base], at = base;
        for (let j = 1; j < g; j++) if (x[base + j] > best) { best = x[base + j]; at = base + j; }
        y[o] = best;
        sw[o] = at; // the first maximum, as ConvNetJS and numpy's argmax
      }
    }
    return y;
  }

  backward(dy, n) {
    const dx = this.buf.dx, sw = this.buf.i32switch, len = n * this.outSize;
    dx.fill(0, 0, n * this.inSize);
    for (let o = 0; o < len; o++) dx[sw[o]] = dy[o];
    return dx;
  }
}

/** Zeroes each input with probability drop_prob while training; scales by 1 - drop_prob
 * otherwise. Draws `this.random()` (uniform in [0, 1)) once per value, in (n, y, x, c) order:
 * an input is kept when its draw is >= drop_prob, as numpy's `rng.random(shape) >= p`. */
export class DropoutLayer extends Layer {
  static type = "dropout";

  constructor(def, inShape) {
    super(def, inShape);
    this.p = def.drop_prob;
    this.scale = Math.fround(1 - this.p);
    this.random = Math.random;
  }

  buffers(n, withDx) { return { ...super.buffers(n, withDx), keep: n * this.outSize }; }

  forward(x, n, training) {
    const y = this.buf.y, keep = this.buf.keep, len = n * this.outSize;
    this.training = training;
    if (!training) {
      for (let i = 0; i < len; i++) y[i] = x[i] * this.scale;
      return y;
    }
    for (let i = 0; i < len; i++) {
      const k = this.random() >= this.p ? 1 : 0;
      keep[i] = k;
      y[i] = x[i] * k;
    }
    return y;
  }

  backward(dy, n) {
    const dx = this.buf.dx, keep = this.buf.keep, len = n * this.outSize;
    if (!this.training) for (let i = 0; i < len; i++) dx[i] = dy[i] * this.scale;
    else for (let i = 0; i < len; i++) dx[i] = dy[i] * keep[i];
    return dx;
  }
}

/** y_i = x_i / S_i^beta, S_i = k + alpha/n * sum_{|j - i| <= n/2} x_j^2, across channels.
 * backward is the true derivative (ConvNetJS's differs; docs/formats.md). */
export class LocalResponseNormalizationLayer extends Layer {
  static type = "lrn";

  buffers(n, withDx) { return { ...super.buffers(n, withDx), s: n * this.outSize, spow: n * this.outSize }; }

  forward(x, n) {
    const { k, alpha, beta } = this.def, half = this.def.n >> 1, scale = alpha / this.def.n;
    const C = this.inShape[0], y = this.buf.y, s = this.buf.s, spow = this.buf.spow;
    const pixels = n * this.inShape[1] * this.inShape[2];
    this.x = x;
    for (let p = 0; p < pixels; p++) {
      const base = p * C;
      for (let i = 0; i < C; i++) {
        let sum = 0;
        const hi = Math.min(i + half, C - 1);
        for (let j = Math.max(i - half, 0); j <= hi; j++) sum += x[base + j] * x[base + j];
        const si = k + scale * sum;
        s[base + i] = si;
        spow[base + i] = Math.pow(si, beta);
        y[base + i] = x[base + i] / spow[base + i];
      }
    }
    return y;
  }

  backward(dy, n) {
    const { alpha, beta } = this.def, half = this.def.n >> 1, coeff = (2 * alpha * beta) / this.def.n;
    const C = this.inShape[0], x = this.x, s = this.buf.s, spow = this.buf.spow, dx = this.buf.dx;
    const pixels = n * this.inShape[1] * this.inShape[2];
    for (let p = 0; p < pixels; p++) {
      const base = p * C;
      for (let i = 0; i < C; i++) {
        let sum = 0; // sum over j near i of dy_j x_j S_j^(-beta-1)
        const hi = Math.min(i + half, C - 1);
        for (let j = Math.max(i - half, 0); j <= hi; j++) {
          const q = base + j;
          sum += (dy[q] * x[q]) / (spow[q] * s[q]);
        }
        const q = base + i;
        dx[q] = dy[q] / spow[q] - coeff * x[q] * sum;
      }
    }
    return dx;
  }
}
