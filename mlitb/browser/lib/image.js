// Images to network inputs, converted exactly as the data server converts uploads
// (mlitb/dataserver/_ingest.py): to grayscale (Pillow's "L", ITU-R 601-2 luma) or RGB with alpha
// dropped, then, if the size differs, scaled to cover the project's width x height and
// center-cropped (Pillow's ImageOps.fit with BILINEAR); channel-major (C, H, W) uint8. The
// network sees pixel / 255 - 0.5.
//
// The resampling is a port of Pillow's (src/libImaging/Resample.c: a triangle filter widened by
// the scale factor, fixed-point coefficients with 22 fraction bits, a horizontal then a vertical
// pass), so a PNG gives the very pixels the data server stores. Two differences stay: the
// browser decodes JPEGs itself (Pillow may decode them at a reduced scale first, `draft`) and
// applies their EXIF orientation, and a canvas keeps partly transparent pixels premultiplied.

const PRECISION_BITS = 32 - 8 - 2;
const f32 = Math.fround;

/** Pillow's ImageOps.fit: the box (left, top, right, bottom) of a `sw` x `sh` image that
 * covers a `w` x `h` output, centered. */
export function fitBox(sw, sh, w, h) {
  const liveRatio = sw / sh, outputRatio = w / h;
  let cw, ch;
  if (liveRatio === outputRatio) { cw = sw; ch = sh; }
  else if (liveRatio >= outputRatio) { cw = outputRatio * sh; ch = sh; }
  else { cw = sw; ch = sw / outputRatio; }
  const left = (sw - cw) * 0.5, top = (sh - ch) * 0.5;
  return [left, top, left + cw, top + ch];
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for BILINEAR. `in0`, `in1` are C floats. */
function coefficients(inSize, in0, in1, outSize) {
  const scale = f32(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Int32Array(outSize * ksize), bounds = new Int32Array(outSize * 2);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      const w = t < 1 ? 1 - t : 0;
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { kk, bounds, ksize };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

function horizontalPass(src, width, rows, rowOffset, c, w) {
  const out = new Uint8Array(w * rows);
  for (let y = 0; y < rows; y++) {
    const line = (y + rowOffset) * width;
    for (let xx = 0; xx < w; xx++) {
      const xmin = c.bounds[2 * xx], xmax = c.bounds[2 * xx + 1], k = xx * c.ksize;
      let s = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++) s += src[line + x + xmin] * c.kk[k + x];
      out[y * w + xx] = clip8(s);
    }
  }
  return out;
}

function verticalPass(src, width, rowShift, c, h) {
  const out = new Uint8Array(width * h);
  for (let yy = 0; yy < h; yy++) {
    const ymin = c.bounds[2 * yy] - rowShift, ymax = c.bounds[2 * yy + 1], k = yy * c.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) s += src[(y + ymin) * width + xx] * c.kk[k + y];
      out[yy * width + xx] = clip8(s);
    }
  }
  return out;
}

/** Resample one 8-bit plane (`sw` x `sh`) from `box` to `w` x `h`, as Pillow's
 * ImagingResampleInner (Pillow 11 and later: the vertical pass goes first when the height
 * shrinks by more than twice as many pixels as the width; Pillow 10 always went horizontal
 * first, which can differ by one level). The sums stay far below 2^53: plain numbers hold
 * Pillow's integer arithmetic exactly. */
export function resamplePlane(plane, sw, sh, box, w, h) {
  const b = box.map(f32);
  const needH = w !== sw || b[0] !== 0 || b[2] !== w;
  const needV = h !== sh || b[1] !== 0 || b[3] !== h;
  const horizontalFirst = !(sh - h > 0 && sh - h > (sw - w) * 2);
  const horiz = coefficients(sw, b[0], b[2], w), vert = coefficients(sh, b[1], b[3], h);
  let out = plane;
  if (horizontalFirst) {
    let width = sw, shift = 0;
    if (needH) {
      const first = vert.bounds[0], last = vert.bounds[2 * h - 2] + vert.bounds[2 * h - 1];
      out = horizontalPass(out, sw, last - first, first, horiz, w);
      width = w;
      shift = first;
    }
    if (needV) out = verticalPass(out, width, shift, vert, h);
  } else {
    if (needV) out = verticalPass(out, sw, 0, vert, h);
    if (needH) out = horizontalPass(out, sw, needV ? h : sh, 0, horiz, w);
  }
  return out;
}

/** RGBA bytes (`n` pixels) -> channel planes: [L] (Pillow's rgb2l) or [R, G, B]. */
export function toPlanes(rgba, n, channels) {
  if (channels === 1) {
    const l = new Uint8Array(n);
    for (let p = 0; p < n; p++) {
      l[p] = (rgba[4 * p] * 19595 + rgba[4 * p + 1] * 38470 + rgba[4 * p + 2] * 7471 + 0x8000) >>> 16;
    }
    return [l];
  }
  const planes = [new Uint8Array(n), new Uint8Array(n), new Uint8Array(n)];
  for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) planes[c][p] = rgba[4 * p + c];
  return planes;
}

/** RGBA bytes of a `sw` x `sh` image -> {pixels: (C, H, W) uint8, x: network input, rgba:
 * ImageData of the result (a preview)}, for `shape` [C, H, W]. */
export function convertPixels(rgba, sw, sh, shape) {
  const [C, H, W] = shape;
  let planes = toPlanes(rgba, sw * sh, C);
  if (sw !== W || sh !== H) {
    const box = fitBox(sw, sh, W, H);
    planes = planes.map((plane) => resamplePlane(plane, sw, sh, box, W, H));
  }
  const n = W * H, pixels = new Uint8Array(C * n);
  planes.forEach((plane, c) => pixels.set(plane, c * n));
  const x = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) x[i] = pixels[i] / 255 - 0.5;
  const preview = new ImageData(W, H);
  for (let p = 0; p < n; p++) {
    for (let c = 0; c < 3; c++) preview.data[4 * p + c] = pixels[(C === 1 ? 0 : c) * n + p];
    preview.data[4 * p + 3] = 255;
  }
  return { pixels, x, rgba: preview };
}

export const MAX_PIXELS = 1 << 24; // as the data server's default limit per image

/** An image source (ImageBitmap, video, canvas) of `sw` x `sh` pixels -> convertPixels(...). */
export function convert(source, sw, sh, shape) {
  if (sw * sh > MAX_PIXELS) throw new RangeError(`${sw}x${sh} pixels, over the limit of ${MAX_PIXELS}`);
  const canvas = new OffscreenCanvas(sw, sh);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, sw, sh);
  return convertPixels(ctx.getImageData(0, 0, sw, sh).data, sw, sh, shape);
}

/** Decode an image file (Blob) to an ImageBitmap with its pixels as stored (no color-space
 * conversion, no premultiplication where the browser allows). */
export async function decodeFile(file) {
  try {
    return await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (err) {
    if (err && err.name === "InvalidStateError") throw err; // not an image
    return await createImageBitmap(file);
  }
}
