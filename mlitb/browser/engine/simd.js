// WebAssembly SIMD matrix products, assembled here at load time: no build step, no binary file.
//
// Scalar JavaScript tops out near 2 GMAC/s on the conv products (register-blocked, kernels.js);
// 128-bit SIMD (four float32 lanes) runs them at 10-20 (measured in Chromium). This module
// writes a tiny wasm module (~2 KB) byte by byte: three kernels over one imported memory, the
// net's arena. kernels.js calls them for the block-aligned part of a product when its arrays
// live in that memory, and does the leftover rows and columns itself. Without wasm SIMD
// (`supported` false) everything stays JavaScript. Where relaxed SIMD is on, a second module
// uses its fused multiply-add (`fusedSupported`); a net picks one at construction.
//
//   dot(M, N, K, A, B, C, ldc, add)   C[i*ldc+j] (+)= sum_k A[i*K+k] B[j*K+k]
//       4x2 blocks of C, 8 vector accumulators along k; M % 4 == 0, N % 2 == 0, K % 4 == 0
//   axpy(M, N, K, A, sai, sak, B, ldb, C, ldc, add)
//                                     C[i*ldc+j] (+)= sum_k A[i*sai+k*sak] B[k*ldb+j]
//       4x8 blocks of C, each A value splatted over a row of B; M % 4 == 0, N % 8 == 0
//   im2col(n, OH, OW, ky, run, src, img, row, srow, scol, dst, ld)
//       from a zero-bordered batch at src (strides in bytes: img per sample, row per image
//       row, srow/scol per output row/column), ky runs of `run` floats per output position,
//       rows of the result `ld` bytes apart
// A, B, C are byte offsets into the memory; arithmetic is float32, as numpy's.

const I32 = 0x7f, V128 = 0x7b;

function uleb(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function sleb(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) { out.push(b); return out; }
    out.push(b | 0x80);
  }
}

const vec = (items) => [...uleb(items.length), ...items.flat()];
const section = (id, bytes) => [id, ...uleb(bytes.length), ...bytes];
const name = (s) => vec([...new TextEncoder().encode(s)].map((b) => [b]));

// -- instructions ----------------------------------------------------------------------------
const get = (i) => [0x20, ...uleb(i)];
const set = (i) => [0x21, ...uleb(i)];
const i32 = (n) => [0x41, ...sleb(n)];
const add = [0x6a], mul = [0x6c], and = [0x71], geS = [0x4e], shl = [0x74];
const simd = (op, ...imm) => [0xfd, ...uleb(op), ...imm];
const memarg = (offset = 0, align = 4) => [...uleb(align), ...uleb(offset)];
const v128load = (offset) => simd(0x00, ...memarg(offset, 4));
const v128store = (offset) => simd(0x0b, ...memarg(offset, 4));
const f32load = (offset) => [0x2a, ...memarg(offset, 2)];
const f32store = (offset) => [0x38, ...memarg(offset, 2)];
const f32add = [0x92], f32zero = [0x43, 0, 0, 0, 0], select = [0x1b];
const f32x4 = { splat: simd(0x13), add: simd(0xe4), mul: simd(0xe6), lane: (l) => simd(0x1f, l) };
const zero128 = simd(0x0c, ...new Array(16).fill(0));
const end = [0x0b];

/** for (; local[i] < local[limit]; local[i] += step) body */
const loopWhileLess = (i, limit, step, body) => [
  0x02, 0x40, 0x03, 0x40,
  ...get(i), ...get(limit), ...geS, 0x0d, 1, // br_if out
  ...body,
  ...get(i), ...i32(step), ...add, ...set(i),
  0x0c, 0, // br loop
  ...end, ...end,
];
const sum = (...exprs) => exprs.reduce((a, e, i) => (i ? [...a, ...e, ...add] : e), []);

/** Locals numbered after the params, grouped by type. */
function locals(nParams, groups) {
  const ids = {};
  let next = nParams;
  const decl = [];
  for (const [type, names] of groups) {
    decl.push([...uleb(names.length), type]);
    for (const n of names) ids[n] = next++;
  }
  return { ids, decl: vec(decl) };
}

function dotKernel(multiplyAdd) {
  const [M, N, K, A, B, C, LDC, ADD] = [0, 1, 2, 3, 4, 5, 6, 7];
  const { ids: L, decl } = locals(8, [
    [I32, ["i", "j", "k", "kb", "rowA", "rowB", "pa", "pb", "pc", "rowC"]],
    [V128, ["a", "b0", "b1", ...[0, 1, 2, 3].flatMap((r) => [`c${r}0`, `c${r}1`])]],
  ]);
  const acc = (r, c) => L[`c${r}${c}`];
  const madd = (r, c, b) => [...multiplyAdd(get(L.a), get(b), get(acc(r, c))), ...set(acc(r, c))];
  const inner = [ // k-loop body: pa, pb point at A[i, k], B[j, k]
    ...get(L.pb), ...get(L.k), ...add, ...v128load(0), ...set(L.b0),
    ...get(L.pb), ...get(L.k), ...add, ...get(L.rowB), ...add, ...v128load(0), ...set(L.b1),
    ...[0, 1, 2, 3].flatMap((r) => [
      ...get(L.pa), ...get(L.k), ...add, ...(r ? [...get(L.rowA), ...i32(r), ...mul, ...add] : []), ...v128load(0), ...set(L.a),
      ...madd(r, 0, L.b0), ...madd(r, 1, L.b1),
    ]),
  ];
  const hsum = (v) => [...get(v), ...f32x4.lane(0), ...get(v), ...f32x4.lane(1), ...f32add,
    ...get(v), ...f32x4.lane(2), ...get(v), ...f32x4.lane(3), ...f32add, ...f32add];
  const store = [0, 1, 2, 3].flatMap((r) => [0, 1].flatMap((c) => {
    const addr = [...get(L.pc), ...(r ? [...get(L.rowC), ...i32(r), ...mul, ...add] : [])];
    const off = c * 4;
    return [...addr, ...hsum(acc(r, c)),
      ...addr, ...f32load(off), ...f32zero, ...get(ADD), ...select, // add ? old : 0
      ...f32add, ...f32store(off)];
  }));
  const body = [
    ...get(K), ...i32(2), ...shl, ...set(L.kb), // K in bytes
    ...get(L.kb), ...set(L.rowA), ...get(L.kb), ...set(L.rowB),
    ...get(LDC), ...i32(2), ...shl, ...set(L.rowC),
    ...i32(0), ...set(L.i),
    ...loopWhileLess(L.i, M, 4, [
      ...sum(get(A), [...get(L.i), ...get(L.rowA), ...mul]), ...set(L.pa),
      ...i32(0), ...set(L.j),
      ...loopWhileLess(L.j, N, 2, [
        ...sum(get(B), [...get(L.j), ...get(L.rowB), ...mul]), ...set(L.pb),
        ...[0, 1, 2, 3].flatMap((r) => [0, 1].flatMap((c) => [...zero128, ...set(acc(r, c))])),
        ...i32(0), ...set(L.k),
        ...loopWhileLess(L.k, L.kb, 16, inner),
        ...sum(get(C), [...get(L.i), ...get(L.rowC), ...mul], [...get(L.j), ...i32(4), ...mul]), ...set(L.pc),
        ...store,
      ]),
    ]),
  ];
  return { params: 8, body: [...decl, ...body, ...end] };
}

function axpyKernel(multiplyAdd) {
  const [M, N, K, A, SAI, SAK, B, LDB, C, LDC, ADD] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const { ids: L, decl } = locals(11, [
    [I32, ["i", "j", "k", "sai", "sak", "rowB", "rowC", "pa", "pb", "pc"]],
    [V128, ["b0", "b1", "a", ...[0, 1, 2, 3].flatMap((r) => [`c${r}0`, `c${r}1`])]],
  ]);
  const acc = (r, c) => L[`c${r}${c}`];
  const madd = (r, c, b) => [...multiplyAdd(get(L.a), get(b), get(acc(r, c))), ...set(acc(r, c))];
  const inner = [ // k-loop body: pa -> A[i, k], pb -> B[k, j]
    ...get(L.pb), ...v128load(0), ...set(L.b0),
    ...get(L.pb), ...v128load(16), ...set(L.b1),
    ...[0, 1, 2, 3].flatMap((r) => [
      ...get(L.pa), ...(r ? [...get(L.sai), ...i32(r), ...mul, ...add] : []), ...f32load(0), ...f32x4.splat, ...set(L.a),
      ...madd(r, 0, L.b0), ...madd(r, 1, L.b1),
    ]),
    ...get(L.pa), ...get(L.sak), ...add, ...set(L.pa),
    ...get(L.pb), ...get(L.rowB), ...add, ...set(L.pb),
  ];
  const storeRow = [0, 1, 2, 3].flatMap((r) => [0, 1].flatMap((c) => {
    const addr = [...get(L.pc), ...(r ? [...get(L.rowC), ...i32(r), ...mul, ...add] : [])];
    const off = c * 16;
    return [...addr, ...get(acc(r, c)),
      ...addr, ...v128load(off), ...zero128, ...get(ADD), ...select, // add ? old : 0
      ...f32x4.add, ...v128store(off)];
  }));
  const body = [
    ...get(SAI), ...i32(2), ...shl, ...set(L.sai),
    ...get(SAK), ...i32(2), ...shl, ...set(L.sak),
    ...get(LDB), ...i32(2), ...shl, ...set(L.rowB),
    ...get(LDC), ...i32(2), ...shl, ...set(L.rowC),
    ...i32(0), ...set(L.j),
    ...loopWhileLess(L.j, N, 8, [ // column strips outer: B's strip stays in cache over all rows
      ...i32(0), ...set(L.i),
      ...loopWhileLess(L.i, M, 4, [
        ...sum(get(A), [...get(L.i), ...get(L.sai), ...mul]), ...set(L.pa),
        ...sum(get(B), [...get(L.j), ...i32(4), ...mul]), ...set(L.pb),
        ...[0, 1, 2, 3].flatMap((r) => [0, 1].flatMap((c) => [...zero128, ...set(acc(r, c))])),
        ...i32(0), ...set(L.k),
        ...loopWhileLess(L.k, K, 1, inner),
        ...sum(get(C), [...get(L.i), ...get(L.rowC), ...mul], [...get(L.j), ...i32(4), ...mul]), ...set(L.pc),
        ...storeRow,
      ]),
    ]),
  ];
  return { params: 11, body: [...decl, ...body, ...end] };
}

function im2colKernel() {
  // im2col from a zero-bordered (padded) channels-last batch: for each output position, ky runs
  // of `run` = kx*C floats, copied four at a time (then one at a time for the last run % 4).
  const [N, OH, OW, KY, RUN, SRC, IMG, ROW, SROW, SCOL, DST, LD] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const { ids: L, decl } = locals(12, [
    [I32, ["s", "oy", "ox", "i", "k", "runB", "run4", "pimg", "prow", "p", "d", "row"]],
  ]);
  const copyRun = [ // from p to d, runB bytes
    ...i32(0), ...set(L.k),
    ...loopWhileLess(L.k, L.run4, 16, [
      ...get(L.d), ...get(L.k), ...add, ...get(L.p), ...get(L.k), ...add, ...v128load(0), ...v128store(0),
    ]),
    ...loopWhileLess(L.k, L.runB, 4, [
      ...get(L.d), ...get(L.k), ...add, ...get(L.p), ...get(L.k), ...add, ...f32load(0), ...f32store(0),
    ]),
  ];
  const body = [
    ...get(RUN), ...i32(2), ...shl, ...set(L.runB),
    ...get(RUN), ...i32(-4), ...and, ...i32(2), ...shl, ...set(L.run4),
    ...get(DST), ...set(L.row),
    ...i32(0), ...set(L.s),
    ...loopWhileLess(L.s, N, 1, [
      ...sum(get(SRC), [...get(L.s), ...get(IMG), ...mul]), ...set(L.pimg),
      ...i32(0), ...set(L.oy),
      ...loopWhileLess(L.oy, OH, 1, [
        ...sum(get(L.pimg), [...get(L.oy), ...get(SROW), ...mul]), ...set(L.prow),
        ...i32(0), ...set(L.ox),
        ...loopWhileLess(L.ox, OW, 1, [
          ...sum(get(L.prow), [...get(L.ox), ...get(SCOL), ...mul]), ...set(L.p),
          ...get(L.row), ...set(L.d),
          ...i32(0), ...set(L.i),
          ...loopWhileLess(L.i, KY, 1, [
            ...copyRun,
            ...get(L.p), ...get(ROW), ...add, ...set(L.p),
            ...get(L.d), ...get(L.runB), ...add, ...set(L.d),
          ]),
          ...get(L.row), ...get(LD), ...add, ...set(L.row),
        ]),
      ]),
    ]),
  ];
  return { params: 12, body: [...decl, ...body, ...end] };
}

// a * b + c, four lanes: two instructions, or relaxed SIMD's fused multiply-add where the
// processor has one (one instruction and one rounding instead of two).
const mulThenAdd = (a, b, c) => [...c, ...a, ...b, ...f32x4.mul, ...f32x4.add];
const fusedMadd = (a, b, c) => [...a, ...b, ...c, ...simd(0x105)];

function assemble(multiplyAdd) {
  const kernels = [["dot", dotKernel(multiplyAdd)], ["axpy", axpyKernel(multiplyAdd)], ["im2col", im2colKernel()]];
  const types = kernels.map(([, k]) => [0x60, ...vec(new Array(k.params).fill([I32])), 0]);
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec([[...name("env"), ...name("memory"), 0x02, 0x00, 0x01]])), // memory, min 1 page
    ...section(3, vec(kernels.map((_, i) => uleb(i)))),
    ...section(7, vec(kernels.map(([n], i) => [...name(n), 0x00, ...uleb(i)]))),
    ...section(10, vec(kernels.map(([, k]) => [...uleb(k.body.length), ...k.body]))),
  ]);
}

const hasWasm = typeof WebAssembly === "object";
const compile = (bytes) => (hasWasm && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null);
const plainModule = compile(assemble(mulThenAdd));
const fusedModule = plainModule && compile(assemble(fusedMadd)); // where relaxed SIMD is on
/** Whether this browser runs wasm SIMD. */
export const supported = plainModule !== null;
/** Whether it has relaxed SIMD's fused multiply-add too. */
export const fusedSupported = fusedModule !== null;

/** A WebAssembly.Memory of at least `byteLength` bytes and the kernels over it, or null without
 * SIMD. `fma`: use the fused multiply-add where there is one (measured ~10-20% faster products;
 * rounding differs from the two-instruction form in the last bit, as BLAS libraries do). */
export function instantiate(byteLength, { fma = true } = {}) {
  const module = fma && fusedModule ? fusedModule : plainModule;
  if (!module) return null;
  const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(byteLength / 65536)) });
  const { exports } = new WebAssembly.Instance(module, { env: { memory } });
  return { memory, fused: module === fusedModule, dot: exports.dot, axpy: exports.axpy, im2col: exports.im2col };
}
