// A small line chart on a canvas: a few series of (x, y) points, axes with round ticks, a
// legend. Sized by its CSS box and the device pixel ratio; redraw on resize.

function ticks(min, max, count, integer = false) {
  const span = max - min || 1;
  const raw = span / Math.max(count, 1), mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

const format = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : +v.toPrecision(3)).toString();

/**
 * @param canvas an HTMLCanvasElement
 * @param opts {series: [{label, color, points: [[x, y]], dots, dashed}], xLabel, yLabel,
 *              yMin, yMax (fixed bounds, else from the data), percent (y as %), empty (text)}
 */
export function drawChart(canvas, opts) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300, height = canvas.clientHeight || 200;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas);
  const ink = style.color || "#222", grid = style.getPropertyValue("--grid") || "#ddd";
  ctx.font = `12px ${style.fontFamily || "sans-serif"}`;
  const series = opts.series.filter((s) => s.points.length);
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    ctx.fillStyle = ink;
    ctx.globalAlpha = 0.6;
    ctx.textAlign = "center";
    ctx.fillText(opts.empty || "no data yet", width / 2, height / 2);
    ctx.globalAlpha = 1;
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let y0 = opts.yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = opts.yMax ?? Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 = opts.yMin ?? y0 - 1; y1 = y0 + (opts.yMax !== undefined ? opts.yMax - y0 : 2); }
  const pad = { left: 46, right: 12, top: 22, bottom: 34 };
  const pw = Math.max(10, width - pad.left - pad.right), ph = Math.max(10, height - pad.top - pad.bottom);
  const X = (v) => pad.left + ((v - x0) / (x1 - x0)) * pw;
  const Y = (v) => pad.top + ph - ((v - y0) / (y1 - y0)) * ph;

  ctx.lineWidth = 1;
  ctx.strokeStyle = grid;
  ctx.fillStyle = ink;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of ticks(y0, y1, Math.max(2, Math.floor(ph / 40)))) {
    ctx.beginPath(); ctx.moveTo(pad.left, Y(v)); ctx.lineTo(pad.left + pw, Y(v)); ctx.stroke();
    ctx.fillText(opts.percent ? `${format(v * 100)}%` : format(v), pad.left - 6, Y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const integerX = all.every((p) => Number.isInteger(p[0]));
  for (const v of ticks(x0, x1, Math.max(2, Math.floor(pw / 70)), integerX)) {
    ctx.beginPath(); ctx.moveTo(X(v), pad.top + ph); ctx.lineTo(X(v), pad.top + ph + 4); ctx.stroke();
    ctx.fillText(format(v), X(v), pad.top + ph + 6);
  }
  ctx.strokeStyle = ink;
  ctx.beginPath(); ctx.moveTo(pad.left, pad.top); ctx.lineTo(pad.left, pad.top + ph); ctx.lineTo(pad.left + pw, pad.top + ph); ctx.stroke();
  if (opts.xLabel) { ctx.textAlign = "right"; ctx.fillText(opts.xLabel, pad.left + pw, height - 14); }

  ctx.save();
  ctx.beginPath(); ctx.rect(pad.left, pad.top - 2, pw + 2, ph + 4); ctx.clip();
  for (const s of series) {
    ctx.strokeStyle = ctx.fillStyle = s.color;
    ctx.lineWidth = s.width || 2;
    ctx.setLineDash(s.dashed ? [5, 4] : []);
    ctx.beginPath();
    s.points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
    if (s.dots) for (const [x, y] of s.points) { ctx.beginPath(); ctx.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); ctx.fill(); }
  }
  ctx.restore();
  ctx.setLineDash([]);

  // legend, top left
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  let lx = pad.left + 4;
  for (const s of opts.series) {
    ctx.fillStyle = s.color;
    ctx.fillRect(lx, 6, 14, 3);
    ctx.fillStyle = ink;
    const label = opts.yLabel && s === opts.series[0] && opts.series.length === 1 ? opts.yLabel : s.label;
    ctx.fillText(label, lx + 18, 8);
    lx += 26 + ctx.measureText(label).width;
  }
}
