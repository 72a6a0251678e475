// The arithmetic kernels: matrix products and im2col over Float32Array views, all row-major.
//
// Each product runs in WebAssembly SIMD (simd.js) when its arrays live in a memory registered
// with `useSimd` (a net's arena) and its sizes allow; the kernel then takes the block-aligned
// part and the leftover rows and columns are done here, one dot product at a time. Otherwise
// plain JavaScript: sums run in float64 registers and are rounded to float32 when stored, and
// the products are register blocked, 4x4 outputs with 16 scalar accumulators, which V8 keeps in
// registers (measured in Chromium: ~8x the textbook triple loop, ~2 GMAC/s; SIMD: 10-13).

const simdFor = new WeakMap(); // ArrayBuffer -> the simd.js kernels over it

/** Route products over `buffer` (a WebAssembly.Memory's) to `kernels` from simd.instantiate. */
export function useSimd(buffer, kernels) { simdFor.set(buffer, kernels); }

function simdOver(A, B, C) {
  const k = simdFor.get(C.buffer);
  return k && A.buffer === C.buffer && B.buffer === C.buffer ? k : null;
}

/** C (M x N) = A (M x K) . B^T, B stored (N x K); with `add`, C += instead. */
export function gemmNT(M, N, K, A, B, C, add = false) {
  const k = K % 4 === 0 ? simdOver(A, B, C) : null;
  if (!k) { jsGemmNT(M, N, K, A, B, C, add); return; }
  const M4 = M & ~3, N2 = N & ~1;
  if (M4 && N2) k.dot(M4, N2, K, A.byteOffset, B.byteOffset, C.byteOffset, N, add ? 1 : 0);
  for (let i = 0; i < M4; i++) for (let j = N2; j < N; j++) dotNT(i, j, K, A, B, C, N, add);
  for (let i = M4; i < M; i++) for (let j = 0; j < N; j++) dotNT(i, j, K, A, B, C, N, add);
}

/** C (M x N) += A^T . B, with A stored (P x M) and B (P x N): a sum over the P rows. */
export function gemmTN(M, N, P, A, B, C) {
  const k = simdOver(A, B, C);
  if (!k) { jsGemmTN(M, N, P, A, B, C); return; }
  const M4 = M & ~3, N8 = N & ~7;
  if (M4 && N8) k.axpy(M4, N8, P, A.byteOffset, 1, M, B.byteOffset, N, C.byteOffset, N, 1);
  for (let i = 0; i < M4; i++) for (let j = N8; j < N; j++) dotTN(i, j, M, N, P, A, B, C);
  for (let i = M4; i < M; i++) for (let j = 0; j < N; j++) dotTN(i, j, M, N, P, A, B, C);
}

/** C (M x N) = A (M x K) . B (K x N); with `add`, C += instead. */
export function gemmNN(M, N, K, A, B, C, add = false) {
  const k = simdOver(A, B, C);
  if (!k) { jsGemmNN(M, N, K, A, B, C, add); return; }
  const M4 = M & ~3, N8 = N & ~7;
  if (M4 && N8) k.axpy(M4, N8, K, A.byteOffset, K, 1, B.byteOffset, N, C.byteOffset, N, add ? 1 : 0);
  for (let i = 0; i < M4; i++) for (let j = N8; j < N; j++) dotNN(i, j, N, K, A, B, C, add);
  for (let i = M4; i < M; i++) for (let j = 0; j < N; j++) dotNN(i, j, N, K, A, B, C, add);
}

/** gemmNT in plain JavaScript. */
export function jsGemmNT(M, N, K, A, B, C, add = false) {
  let i = 0;
  for (; i + 4 <= M; i += 4) {
    const a0 = i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    let j = 0;
    for (; j + 4 <= N; j += 4) {
      const b0 = j * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0; k < K; k++) {
        const w0 = B[b0 + k], w1 = B[b1 + k], w2 = B[b2 + k], w3 = B[b3 + k];
        let x = A[a0 + k];
        c00 += x * w0; c01 += x * w1; c02 += x * w2; c03 += x * w3;
        x = A[a1 + k];
        c10 += x * w0; c11 += x * w1; c12 += x * w2; c13 += x * w3;
        x = A[a2 + k];
        c20 += x * w0; c21 += x * w1; c22 += x * w2; c23 += x * w3;
        x = A[a3 + k];
        c30 += x * w0; c31 += x * w1; c32 += x * w2; c33 += x * w3;
      }
      let o = i * N + j;
      if (add) {
        C[o] += c00; C[o + 1] += c01; C[o + 2] += c02; C[o + 3] += c03; o += N;
        C[o] += c10; C[o + 1] += c11; C[o + 2] += c12; C[o + 3] += c13; o += N;
        C[o] += c20; C[o + 1] += c21; C[o + 2] += c22; C[o + 3] += c23; o += N;
        C[o] += c30; C[o + 1] += c31; C[o + 2] += c32; C[o + 3] += c33;
      } else {
        C[o] = c00; C[o + 1] = c01; C[o + 2] = c02; C[o + 3] = c03; o += N;
        C[o] = c10; C[o + 1] = c11; C[o + 2] = c12; C[o + 3] = c13; o += N;
        C[o] = c20; C[o + 1] = c21; C[o + 2] = c22; C[o + 3] = c23; o += N;
        C[o] = c30; C[o + 1] = c31; C[o + 2] = c32; C[o + 3] = c33;
      }
    }
    for (; j < N; j++) for (let r = i; r < i + 4; r++) dotNT(r, j, K, A, B, C, N, add);
  }
  for (; i < M; i++) for (let j = 0; j < N; j++) dotNT(i, j, K, A, B, C, N, add);
}

function dotNT(i, j, K, A, B, C, N, add) {
  const a = i * K, b = j * K;
  let s = 0;
  for (let k = 0; k < K; k++) s += A[a + k] * B[b + k];
  C[i * N + j] = add ? C[i * N + j] + s : s;
}

/** gemmTN in plain JavaScript. */
export function jsGemmTN(M, N, P, A, B, C) {
  let j = 0;
  for (; j + 4 <= N; j += 4) {
    let i = 0;
    for (; i + 4 <= M; i += 4) {
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let p = 0, a = i, b = j; p < P; p++, a += M, b += N) {
        const w0 = B[b], w1 = B[b + 1], w2 = B[b + 2], w3 = B[b + 3];
        let x = A[a];
        c00 += x * w0; c01 += x * w1; c02 += x * w2; c03 += x * w3;
        x = A[a + 1];
        c10 += x * w0; c11 += x * w1; c12 += x * w2; c13 += x * w3;
        x = A[a + 2];
        c20 += x * w0; c21 += x * w1; c22 += x * w2; c23 += x * w3;
        x = A[a + 3];
        c30 += x * w0; c31 += x * w1; c32 += x * w2; c33 += x * w3;
      }
      let o = i * N + j;
      C[o] += c00; C[o + 1] += c01; C[o + 2] += c02; C[o + 3] += c03; o += N;
      C[o] += c10; C[o + 1] += c11; C[o + 2] += c12; C[o + 3] += c13; o += N;
      C[o] += c20; C[o + 1] += c21; C[o + 2] += c22; C[o + 3] += c23; o += N;
      C[o] += c30; C[o + 1] += c31; C[o + 2] += c32; C[o + 3] += c33;
    }
    for (; i < M; i++) for (let c = j; c < j + 4; c++) dotTN(i, c, M, N, P, A, B, C);
  }
  for (; j < N; j++) for (let i = 0; i < M; i++) dotTN(i, j, M, N, P, A, B, C);
}

function dotTN(i, j, M, N, P, A, B, C) {
  let s = 0;
  for (let p = 0; p < P; p++) s += A[p * M + i] * B[p * N + j];
  C[i * N + j] += s;
}

/** gemmNN in plain JavaScript. */
export function jsGemmNN(M, N, K, A, B, C, add = false) {
  let i = 0;
  for (; i + 4 <= M; i += 4) {
    const a0 = i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
    let j = 0;
    for (; j + 4 <= N; j += 4) {
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let k = 0, b = j; k < K; k++, b += N) {
        const w0 = B[b], w1 = B[b + 1], w2 = B[b + 2], w3 = B[b + 3];
        let x = A[a0 + k];
        c00 += x * w0; c01 += x * w1; c02 += x * w2; c03 += x * w3;
        x = A[a1 + k];
        c10 += x * w0; c11 += x * w1; c12 += x * w2; c13 += x * w3;
        x = A[a2 + k];
        c20 += x * w0; c21 += x * w1; c22 += x * w2; c23 += x * w3;
        x = A[a3 + k];
        c30 += x * w0; c31 += x * w1; c32 += x * w2; c33 += x * w3;
      }
      let o = i * N + j;
      if (add) {
        C[o] += c00; C[o + 1] += c01; C[o + 2] += c02; C[o + 3] += c03; o += N;
        C[o] += c10; C[o + 1] += c11; C[o + 2] += c12; C[o + 3] += c13; o += N;
        C[o] += c20; C[o + 1] += c21; C[o + 2] += c22; C[o + 3] += c23; o += N;
        C[o] += c30; C[o + 1] += c31; C[o + 2] += c32; C[o + 3] += c33;
      } else {
        C[o] = c00; C[o + 1] = c01; C[o + 2] = c02; C[o + 3] = c03; o += N;
        C[o] = c10; C[o + 1] = c11; C[o + 2] = c12; C[o + 3] = c13; o += N;
        C[o] = c20; C[o + 1] = c21; C[o + 2] = c22; C[o + 3] = c23; o += N;
        C[o] = c30; C[o + 1] = c31; C[o + 2] = c32; C[o + 3] = c33;
      }
    }
    for (; j < N; j++) for (let r = i; r < i + 4; r++) dotNN(r, j, N, K, A, B, C, add);
  }
  for (; i < M; i++) for (let j = 0; j < N; j++) dotNN(i, j, N, K, A, B, C, add);
}

function dotNN(i, j, N, K, A, B, C, add) {
  let s = 0;
  for (let k = 0; k < K; k++) s += A[i * K + k] * B[k * N + j];
  C[i * N + j] = add ? C[i * N + j] + s : s;
}

/**
 * im2col over channels-last images: x is (n, H, W, C); cols gets one row per output position
 * (n, oy, ox) and one column per kernel cell (i, j, c), K = ky * kx * C; rows are `ld` >= K
 * floats apart (the columns past K are left alone: zero, for the SIMD products' sake). Cells
 * in the zero padding read 0. A kernel row wholly inside the image is one run of kx * C floats.
 * With `xp`, a scratch of (n, H + 2 padY, W + 2 padX, C) floats whose border is zero and stays
 * so, and SIMD kernels over the memory, x is copied into its middle and wasm copies the runs.
 */
export function im2col(x, n, H, W, C, ky, kx, stride, padY, padX, OH, OW, cols, ld = ky * kx * C, xp = null) {
  const k = xp && simdOver(x, xp, cols);
  if (k) { // copy into the zero-bordered buffer xp, then runs without bounds checks, in wasm
    const Hp = H + 2 * padY, Wp = W + 2 * padX, row = Wp * C;
    for (let s = 0, src = 0; s < n; s++) {
      for (let y = 0; y < H; y++) {
        let dst = (s * Hp + y + padY) * row + padX * C;
        for (let end = src + W * C; src < end;) xp[dst++] = x[src++];
      }
    }
    k.im2col(n, OH, OW, ky, kx * C, xp.byteOffset, Hp * row * 4, row * 4, stride * row * 4,
      stride * C * 4, cols.byteOffset, ld * 4);
    return;
  }
  const run = kx * C, skip = ld - ky * kx * C;
  let o = 0;
  for (let s = 0; s < n; s++) {
    const xs = s * H * W * C;
    for (let oy = 0; oy < OH; oy++) {
      const y0 = oy * stride - padY;
      for (let ox = 0; ox < OW; ox++) {
        const x0 = ox * stride - padX;
        const inside = x0 >= 0 && x0 + kx <= W;
        for (let i = 0; i < ky; i++) {
          const y = y0 + i;
          if (y < 0 || y >= H) {
            cols.fill(0, o, o + run);
            o += run;
          } else if (inside) {
            const src = xs + (y * W + x0) * C;
            for (let t = 0; t < run; t++) cols[o + t] = x[src + t];
            o += run;
          } else {
            for (let j = 0; j < kx; j++) {
              const xx = x0 + j;
              if (xx < 0 || xx >= W) {
                for (let c = 0; c < C; c++) cols[o + c] = 0;
              } else {
                const src = xs + (y * W + xx) * C;
                for (let c = 0; c < C; c++) cols[o + c] = x[src + c];
              }
              o += C;
            }
          }
        }
        o += skip;
      }
    }
  }
}

/** The adjoint of im2col: adds each column cell back onto its image position in dx (zeroed by
 * the caller); cells in the padding are dropped. */
export function col2imAdd(cols, n, H, W, C, ky, kx, stride, padY, padX, OH, OW, dx, ld = ky * kx * C) {
  const skip = ld - ky * kx * C;
  let o = 0;
  for (let s = 0; s < n; s++) {
    const xs = s * H * W * C;
    for (let oy = 0; oy < OH; oy++) {
      const y0 = oy * stride - padY;
      for (let ox = 0; ox < OW; ox++) {
        const x0 = ox * stride - padX;
        for (let i = 0; i < ky; i++) {
          const y = y0 + i;
          for (let j = 0; j < kx; j++, o += C) {
            const xx = x0 + j;
            if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
            const dst = xs + (y * W + xx) * C;
            for (let c = 0; c < C; c++) dx[dst + c] += cols[o + c];
          }
        }
        o += skip;
      }
    }
  }
}
