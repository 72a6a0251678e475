// The loss layers. Their input is (n, K) (the fc layer before them is 1x1); `loss` takes the
// targets of the chunk, returns the summed loss and leaves its input gradient in `buf.dx`.

import { Layer } from "./layers.js";

const TINY = 1.1754943508222875e-38; // np.finfo(np.float32).tiny: log of 0 is never -inf

export class LossLayer extends Layer {
  buffers(n) { return { y: n * this.outSize, dx: n * this.outSize }; }

  forward(x, n) { this.x = x; this.n = n; return x; }

  /** Summed loss of the last forward chunk against targets from `offset` on; gradient in buf.dx. */
  loss(targets, offset) { throw new Error("not implemented"); } // eslint-disable-line no-unused-vars

  backward() { throw new TypeError("a loss layer starts the backward pass through loss(targets)"); }
}

export class SoftmaxLayer extends LossLayer {
  static type = "softmax";

  forward(x, n) {
    const K = this.outShape[0], y = this.buf.y;
    this.n = n;
    for (let s = 0; s < n; s++) {
      const o = s * K;
      let max = -Infinity;
      for (let k = 0; k < K; k++) if (x[o + k] > max) max = x[o + k];
      let sum = 0;
      for (let k = 0; k < K; k++) { const e = Math.exp(x[o + k] - max); y[o + k] = e; sum += e; }
      for (let k = 0; k < K; k++) y[o + k] /= sum;
    }
    return y;
  }

  loss(targets, offset) {
    const K = this.outShape[0], p = this.buf.y, dx = this.buf.dx;
    let loss = 0;
    for (let s = 0; s < this.n; s++) {
      const o = s * K, t = targets[offset + s];
      loss -= Math.log(Math.max(p[o + t], TINY));
      for (let k = 0; k < K; k++) dx[o + k] = p[o + k];
      dx[o + t] -= 1;
    }
    return loss;
  }
}

/** Multiclass hinge loss with margin 1 (Weston-Watkins), as ConvNetJS. */
export class SVMLayer extends LossLayer {
  static type = "svm";

  loss(targets, offset) {
    const K = this.outShape[0], x = this.x, dx = this.buf.dx;
    let loss = 0;
    for (let s = 0; s < this.n; s++) {
      const o = s * K, t = targets[offset + s], xt = x[o + t];
      let violated = 0;
      for (let k = 0; k < K; k++) {
        const margin = Math.fround(Math.fround(x[o + k] - xt) + 1); // float32, as numpy
        if (k !== t && margin > 0) { loss += margin; dx[o + k] = 1; violated++; } else dx[o + k] = 0;
      }
      dx[o + t] = -violated;
    }
    return loss;
  }
}

/** 0.5 * (x - y)^2 summed over outputs; targets are (n, K). */
export class RegressionLayer extends LossLayer {
  static type = "regression";

  loss(targets, offset) {
    const K = this.outShape[0], x = this.x, dx = this.buf.dx, len = this.n * K, t0 = offset * K;
    let loss = 0;
    for (let i = 0; i < len; i++) {
      const d = Math.fround(x[i] - targets[t0 + i]);
      dx[i] = d;
      loss += 0.5 * d * d;
    }
    return loss;
  }
}
