// Convolution and max pooling over channels-last chunks (n, H, W, C).

import { col2imAdd, gemmNN, gemmNT, gemmTN, im2col } from "./kernels.js";
import { Layer } from "./layers.js";

// ConvNetJS: Math.floor((in + 2 * pad - k) / stride + 1)
export const outSize = (size, k, stride, pad) => Math.floor((size + 2 * pad - k) / stride) + 1;

// Rows of im2col matrices are padded with zero columns to a multiple of 8 floats, which the
// SIMD products need (kernels.js): for the demo net, 75 -> 80 columns in the first layer.
const padded = (k) => Math.ceil(k / 8) * 8;

/** Weights (F, C, ky, kx) in the flat vector, as in Python. Forward is im2col and one product
 * with the weights in the columns' (ky, kx, C) order; the input gradient of a stride-1
 * convolution is itself a convolution of the output gradient with the flipped kernels (one more
 * im2col and product), otherwise col2im scatters it back. */
export class ConvLayer extends Layer {
  static type = "conv";

  constructor(def, inShape) {
    super(def, inShape);
    const [, H, W] = inShape;
    this.ky = def.sy; this.kx = def.sx; this.stride = def.stride; this.pad = def.pad;
    const oh = outSize(H, this.ky, this.stride, this.pad), ow = outSize(W, this.kx, this.stride, this.pad);
    if (oh < 1 || ow < 1) {
      throw new RangeError(`a ${this.kx}x${this.ky} filter does not fit an input of ${W}x${H} with pad ${this.pad}`);
    }
    this.outShape = [def.filters, oh, ow];
    this.K = this.ky * this.kx * inShape[0];
    this.Kp = padded(this.K); // row length of cols and wl
    this.K2p = padded(this.ky * this.kx * def.filters); // of dcols and wf (input gradient by conv)
    this.dxByConv = this.stride === 1 && this.pad <= Math.min(this.ky, this.kx) - 1;
  }

  paramShapes() { return [[this.outShape[0], this.inShape[0], this.ky, this.kx], [this.outShape[0]]]; }
  decayMuls() { return [[this.def.l1_decay_mul, this.def.l2_decay_mul], [0, 0]]; }

  initParams(normal) {
    const w = this.params[0], scale = Math.sqrt(1 / this.K);
    for (let i = 0; i < w.length; i++) w[i] = normal() * scale;
    this.params[1].fill(this.def.bias_pref);
  }

  buffers(n, withDx) {
    const [F, OH, OW] = this.outShape, [C, H, W] = this.inShape;
    const p = this.pad, qy = this.ky - 1 - p, qx = this.kx - 1 - p;
    const sizes = {
      y: n * OH * OW * F, cols: n * OH * OW * this.Kp, wl: F * this.Kp, dwl: F * this.Kp,
      xp: n * (H + 2 * p) * (W + 2 * p) * C, // zero-bordered copies for the SIMD im2col
    };
    if (withDx) {
      sizes.dx = n * H * W * C;
      sizes.dcols = this.dxByConv ? n * H * W * this.K2p : n * OH * OW * this.Kp;
      if (this.dxByConv) {
        sizes.wf = C * this.K2p;
        sizes.dyp = n * (OH + 2 * qy) * (OW + 2 * qx) * F;
      }
    }
    return sizes;
  }

  /** wl (F, ky*kx*C): the weights in im2col's column order; wf (C, ky*kx*F): flipped kernels. */
  prepare() {
    if (!this.weightsChanged()) return;
    const [F] = this.outShape, C = this.inShape[0], ky = this.ky, kx = this.kx;
    const w = this.params[0], wl = this.buf.wl, wf = this.buf.wf;
    for (let f = 0, src = 0; f < F; f++) {
      for (let c = 0; c < C; c++) {
        for (let i = 0; i < ky; i++) {
          for (let j = 0; j < kx; j++, src++) {
            wl[f * this.Kp + (i * kx + j) * C + c] = w[src];
            if (wf) wf[c * this.K2p + ((ky - 1 - i) * kx + (kx - 1 - j)) * F + f] = w[src];
          }
        }
      }
    }
  }

  forward(x, n) {
    const [F, OH, OW] = this.outShape, [C, H, W] = this.inShape, P = n * OH * OW;
    const { cols, y, wl } = this.buf, b = this.params[1];
    this.n = n;
    im2col(x, n, H, W, C, this.ky, this.kx, this.stride, this.pad, this.pad, OH, OW, cols, this.Kp, this.buf.xp);
    gemmNT(P, F, this.Kp, cols, wl, y);
    for (let p = 0, o = 0; p < P; p++) for (let f = 0; f < F; f++, o++) y[o] += b[f];
    return y;
  }

  backward(dy, n, withDx) {
    const [F, OH, OW] = this.outShape, [C, H, W] = this.inShape, P = n * OH * OW;
    const { cols, dwl } = this.buf, [dw, db] = this.grads, ky = this.ky, kx = this.kx;
    for (let p = 0, o = 0; p < P; p++) for (let f = 0; f < F; f++, o++) db[f] += dy[o];
    dwl.fill(0);
    gemmTN(F, this.Kp, P, dy, cols, dwl);
    for (let f = 0, dst = 0; f < F; f++) {
      for (let c = 0; c < C; c++) {
        for (let i = 0; i < ky; i++) {
          for (let j = 0; j < kx; j++, dst++) dw[dst] += dwl[f * this.Kp + (i * kx + j) * C + c];
        }
      }
    }
    if (!withDx) return null;
    const { dx, dcols } = this.buf;
    if (this.dxByConv) {
      // dx[y, x, c] = sum over (i, j, f) of dy padded by k-1-pad at (y+i, x+j, f) * w[f, c, ky-1-i, kx-1-j]
      im2col(dy, n, OH, OW, F, ky, kx, 1, ky - 1 - this.pad, kx - 1 - this.pad, H, W, dcols, this.K2p, this.buf.dyp);
      gemmNT(n * H * W, C, this.K2p, dcols, this.buf.wf, dx);
    } else {
      gemmNN(P, this.Kp, F, dy, this.buf.wl, dcols);
      dx.fill(0, 0, n * H * W * C);
      col2imAdd(dcols, n, H, W, C, ky, kx, this.stride, this.pad, this.pad, OH, OW, dx, this.Kp);
    }
    return dx;
  }
}

/** Max pooling. Padding never wins (cells outside the input are skipped, as ConvNetJS does); on
 * ties the first maximum in ConvNetJS's scan order (x outer, y inner) takes the gradient. */
export class PoolLayer extends Layer {
  static type = "pool";

  constructor(def, inShape) {
    super(def, inShape);
    const [C, H, W] = inShape;
    this.ky = def.sy; this.kx = def.sx; this.stride = def.stride; this.pad = def.pad;
    const oh = outSize(H, this.ky, this.stride, this.pad), ow = outSize(W, this.kx, this.stride, this.pad);
    if (oh < 1 || ow < 1) {
      throw new RangeError(`a ${this.kx}x${this.ky} pool does not fit an input of ${W}x${H} with pad ${this.pad}`);
    }
    this.outShape = [C, oh, ow];
    // The common 2x2 window, stride 2, no padding: four cells compared in scan order, unrolled.
    this.pairs = this.ky === 2 && this.kx === 2 && this.stride === 2 && this.pad === 0;
  }

  buffers(n, withDx) { return { ...super.buffers(n, withDx), i32switch: n * this.outSize }; }

  forward(x, n) {
    if (this.pairs) return this.forwardPairs(x, n);
    const [C, H, W] = this.inShape, [, OH, OW] = this.outShape, s = this.stride, p = this.pad;
    const y = this.buf.y, sw = this.buf.i32switch;
    for (let b = 0, o = 0; b < n; b++) {
      const xb = b * H * W * C;
      for (let oy = 0; oy < OH; oy++) {
        const y0 = oy * s - p, y1 = Math.min(y0 + this.ky, H), ys = Math.max(y0, 0);
        for (let ox = 0; ox < OW; ox++, o += C) {
          const x0 = ox * s - p, x1 = Math.min(x0 + this.kx, W), xs = Math.max(x0, 0);
          const first = xb + (ys * W + xs) * C; // the first cell in scan order inside the input
          for (let c = 0; c < C; c++) { y[o + c] = x[first + c]; sw[o + c] = first + c; }
          for (let xx = xs; xx < x1; xx++) {
            for (let yy = ys; yy < y1; yy++) {
              const at = xb + (yy * W + xx) * C;
              for (let c = 0; c < C; c++) {
                const v = x[at + c];
                if (v > y[o + c]) { y[o + c] = v; sw[o + c] = at + c; }
              }
            }
          }
        }
      }
    }
    return y;
  }

  forwardPairs(x, n) {
    const [C, H, W] = this.inShape, [, OH, OW] = this.outShape, y = this.buf.y, sw = this.buf.i32switch;
    const down = W * C; // the cell below
    for (let b = 0, o = 0; b < n; b++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          const at = ((b * H + 2 * oy) * W + 2 * ox) * C;
          for (let c = 0; c < C; c++, o++) {
            // scan order x outer, y inner: (x0, y0), (x0, y1), (x1, y0), (x1, y1); first max wins
            let best = x[at + c], arg = at + c, q = at + down + c;
            if (x[q] > best) { best = x[q]; arg = q; }
            q = at + C + c;
            if (x[q] > best) { best = x[q]; arg = q; }
            q = at + down + C + c;
            if (x[q] > best) { best = x[q]; arg = q; }
            y[o] = best;
            sw[o] = arg;
          }
        }
      }
    }
    return y;
  }

  backward(dy, n) {
    const dx = this.buf.dx, sw = this.buf.i32switch, len = n * this.outSize;
    dx.fill(0, 0, n * this.inSize);
    for (let o = 0; o < len; o++) dx[sw[o]] += dy[o];
    return dx;
  }
}
