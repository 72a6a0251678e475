// Data augmentation of a training batch, as mlitb/training/_settings.py's `augment` does it: each image
// moved by (dy, dx) drawn uniformly from [-shift, shift] (the pixels moved in are 0, which is
// mid-grey in net-input space, x / 255 - 0.5: pad and crop), then, with `flip`, mirrored
// left-right with probability 1/2. Labels stay as they are.
//
// The draws come from a generator (the engine's seeded Random, or Math.random) in Python's
// order: all dy, then all dx, then all flips. numpy's streams are not reproduced (as for the
// engine's initial weights), so the test vectors give the offsets and flips explicitly and check
// `shiftFlip`; `drawAugmentation` is checked for its ranges and its seeding.
//
//   const draws = drawAugmentation(random, n, { shift: 2, flip: true });
//   shiftFlip(x, out, n, [C, H, W], draws);   // out: (N, C, H, W), like x

/** Per-image offsets and flips for a batch of n: {dy, dx: Int32Array, flip: Uint8Array}. */
export function drawAugmentation(random, n, { shift = 0, flip = false } = {}) {
  const dy = new Int32Array(n), dx = new Int32Array(n), mirrored = new Uint8Array(n);
  if (shift) {
    const draw = () => Math.min(Math.floor(random() * (2 * shift + 1)), 2 * shift) - shift;
    for (let i = 0; i < n; i++) dy[i] = draw();
    for (let i = 0; i < n; i++) dx[i] = draw();
  }
  if (flip) for (let i = 0; i < n; i++) mirrored[i] = random() < 0.5 ? 1 : 0;
  return { dy, dx, flip: mirrored };
}

/**
 * Write the shifted and flipped copy of the first n images of x into out (both (N, C, H, W),
 * distinct arrays): out[y][x] = in[y - dy][x' - dx] with x' = W-1-x when mirrored, else x, and
 * 0 where that falls outside the image (any offset, even beyond the image, gives zeros there).
 */
export function shiftFlip(x, out, n, [C, H, W], { dy, dx, flip }) {
  const plane = H * W;
  for (let i = 0; i < n; i++) {
    const sy = dy[i], sx = dx[i], mirror = flip[i] === 1;
    for (let c = 0; c < C; c++) {
      const base = (i * C + c) * plane;
      for (let y = 0; y < H; y++) {
        const from = y - sy, row = base + y * W;
        if (from < 0 || from >= H) { out.fill(0, row, row + W); continue; }
        const src = base + from * W;
        for (let col = 0; col < W; col++) {
          const k = (mirror ? W - 1 - col : col) - sx;
          out[row + col] = k >= 0 && k < W ? x[src + k] : 0;
        }
      }
    }
  }
  return out;
}

/** Draw and apply in one go: the augmented copy of n images of x in out, or x itself when
 * there is nothing to do (shift 0, no flips). */
export function augment(x, out, n, shape, random, { shift = 0, flip = false } = {}) {
  if (!shift && !flip) return x;
  return shiftFlip(x, out, n, shape, drawAugmentation(random, n, { shift, flip }));
}
