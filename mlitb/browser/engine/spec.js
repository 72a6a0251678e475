// Layer definitions: makeLayers shorthands desugared, then every field checked and defaulted.
// A port of mlitb/nn/_spec.py: the same defaults, the same structure rules and the same error
// messages (naming the layer by index and type, and the field), so a spec that Python refuses is
// refused here with the same words. The test vectors carry Python's messages for bad specs.

export const LAYER_TYPES = [
  "input", "conv", "pool", "fc", "relu", "sigmoid", "tanh", "maxout", "dropout", "lrn",
  "softmax", "svm", "regression",
];
export const LOSS_TYPES = ["softmax", "svm", "regression"];
const ACTIVATIONS = ["relu", "sigmoid", "tanh", "maxout"];

const FIELDS = {
  input: ["out_sx", "out_sy", "out_depth"],
  conv: ["sx", "sy", "filters", "stride", "pad", "l1_decay_mul", "l2_decay_mul", "bias_pref"],
  pool: ["sx", "sy", "stride", "pad"],
  fc: ["num_neurons", "l1_decay_mul", "l2_decay_mul", "bias_pref"],
  relu: [], sigmoid: [], tanh: [],
  maxout: ["group_size"],
  dropout: ["drop_prob"],
  lrn: ["k", "n", "alpha", "beta"],
  softmax: ["num_classes"], svm: ["num_classes"],
  regression: ["num_neurons"],
};
const SUGAR = ["activation", "group_size", "drop_prob"];

/** Raised for a spec or model that does not fit (mlitb.errors.ModelFormatError). */
export class ModelFormatError extends Error {
  constructor(message) { super(message); this.name = "ModelFormatError"; }
}

/** Python's repr of a JSON value, so messages read as Python's do. */
export function pyRepr(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    return String(v);
  }
  if (typeof v === "string") {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    const body = v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
    return q + (q === "'" ? body.replace(/'/g, "\\'") : body) + q;
  }
  if (Array.isArray(v)) return "[" + v.map(pyRepr).join(", ") + "]";
  return "{" + Object.entries(v).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ") + "}";
}

const pyFloat = (x) => (Number.isInteger(x) ? x.toFixed(1) : String(x));
// Python's str() of a value in a message: strings bare, anything else as repr.
const pyStr = (v) => (typeof v === "string" ? v : pyRepr(v));
const where = (i, type) => `layer ${i} (${pyStr(type)})`;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** Expand makeLayers shorthands, as ConvNetJS 0.3's desugar does (and _spec.desugar). */
export function desugar(defs) {
  if (!Array.isArray(defs)) throw new ModelFormatError("a network spec must be a list of layer definitions");
  const out = [];
  defs.forEach((raw, i) => {
    if (!isObject(raw)) {
      throw new ModelFormatError(`layer ${i}: a layer definition must be an object, got ${pyRepr(raw)}`);
    }
    const d = { ...raw };
    const kind = d.type;
    if (!LAYER_TYPES.includes(kind)) {
      throw new ModelFormatError(`${where(i, kind)}: field 'type' must be one of ${LAYER_TYPES.join(", ")}`);
    }
    if (LOSS_TYPES.includes(kind)) {
      const size = d[kind === "regression" ? "num_neurons" : "num_classes"];
      // The one deviation from makeLayers (as in Python): no second fc of the same size.
      const prev = out.length ? out[out.length - 1] : {};
      if (!(prev.type === "fc" && prev.num_neurons === size)) out.push({ type: "fc", num_neurons: size });
    }
    const activation = d.activation;
    delete d.activation;
    if ((kind === "conv" || kind === "fc") && !("bias_pref" in d)) {
      d.bias_pref = activation === "relu" ? 0.1 : 0.0;
    }
    let groupSize = null;
    let dropProb = null;
    if (kind !== "maxout") { groupSize = d.group_size ?? null; delete d.group_size; }
    if (kind !== "dropout") { dropProb = d.drop_prob ?? null; delete d.drop_prob; }
    out.push(d);
    if (activation !== undefined && activation !== null) {
      if (!ACTIVATIONS.includes(activation)) {
        throw new ModelFormatError(`${where(i, kind)}: field 'activation' must be one of ${ACTIVATIONS.join(", ")}, got ${pyRepr(activation)}`);
      }
      const act = { type: activation };
      if (activation === "maxout") act.group_size = groupSize === null ? 2 : groupSize;
      out.push(act);
    }
    if (dropProb !== null) out.push({ type: "dropout", drop_prob: dropProb });
  });
  return out;
}

function int(d, key, at, dflt = null, minimum = 1) {
  const value = d[key] === undefined ? dflt : d[key]; // present but null: required, as in Python
  if (value === null) throw new ModelFormatError(`${at}: field '${key}' is required`);
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new ModelFormatError(`${at}: field '${key}' must be an integer, got ${pyRepr(value)}`);
  }
  if (value < minimum) throw new ModelFormatError(`${at}: field '${key}' must be >= ${minimum}, got ${pyRepr(value)}`);
  return value;
}

function float(d, key, at, { dflt = null, lo = null, hi = null, loOpen = false, hiOpen = false } = {}) {
  const value = d[key] === undefined ? dflt : d[key];
  if (value === null) throw new ModelFormatError(`${at}: field '${key}' is required`);
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ModelFormatError(`${at}: field '${key}' must be a finite number, got ${pyRepr(value)}`);
  }
  if (lo !== null && (value < lo || (loOpen && value === lo))) {
    throw new ModelFormatError(`${at}: field '${key}' must be ${loOpen ? ">" : ">="} ${pyFloat(lo)}, got ${pyRepr(value)}`);
  }
  if (hi !== null && (value > hi || (hiOpen && value === hi))) {
    throw new ModelFormatError(`${at}: field '${key}' must be ${hiOpen ? "<" : "<="} ${pyFloat(hi)}, got ${pyRepr(value)}`);
  }
  return value;
}

/** Check one desugared layer `d` at index `i` and fill in its defaults (throws ModelFormatError). */
export function normalizeLayer(i, d) {
  const kind = d.type;
  const at = where(i, kind);
  const known = new Set(["type", ...FIELDS[kind], ...SUGAR]);
  const unknown = Object.keys(d).filter((k) => !known.has(k)).sort();
  if (unknown.length) throw new ModelFormatError(`${at}: unknown field(s) ${unknown.map(pyRepr).join(", ")}`);
  const n = { type: kind };
  if (kind === "input") {
    for (const key of ["out_sx", "out_sy", "out_depth"]) n[key] = int(d, key, at, 1);
  } else if (kind === "conv") {
    n.sx = int(d, "sx", at);
    n.sy = int(d, "sy", at, n.sx);
    n.filters = int(d, "filters", at);
    n.stride = int(d, "stride", at, 1);
    n.pad = int(d, "pad", at, 0, 0);
  } else if (kind === "pool") {
    n.sx = int(d, "sx", at);
    n.sy = int(d, "sy", at, n.sx);
    n.stride = int(d, "stride", at, 2);
    n.pad = int(d, "pad", at, 0, 0);
    if (n.pad >= Math.min(n.sx, n.sy)) {
      throw new ModelFormatError(`${at}: field 'pad' must be smaller than the window (${n.sx}x${n.sy}), got ${n.pad}`);
    }
  } else if (kind === "fc" || kind === "regression") {
    n.num_neurons = int(d, "num_neurons", at);
  } else if (kind === "maxout") {
    n.group_size = int(d, "group_size", at, 2);
  } else if (kind === "dropout") {
    n.drop_prob = float(d, "drop_prob", at, { dflt: 0.5, lo: 0.0, hi: 1.0, hiOpen: true });
  } else if (kind === "lrn") {
    n.k = float(d, "k", at, { lo: 0.0, loOpen: true });
    n.n = int(d, "n", at);
    if (n.n % 2 === 0) throw new ModelFormatError(`${at}: field 'n' must be odd, got ${n.n}`);
    n.alpha = float(d, "alpha", at, { lo: 0.0 });
    n.beta = float(d, "beta", at, { lo: 0.0 });
  } else if (kind === "softmax" || kind === "svm") {
    n.num_classes = int(d, "num_classes", at, null, 2);
  }
  if (kind === "conv" || kind === "fc") {
    n.l1_decay_mul = float(d, "l1_decay_mul", at, { dflt: 0.0, lo: 0.0 });
    n.l2_decay_mul = float(d, "l2_decay_mul", at, { dflt: 1.0, lo: 0.0 });
    n.bias_pref = float(d, "bias_pref", at, { dflt: 0.0 });
  }
  return n;
}

/** Desugar, then validate every layer and fill in every default (Python's normalize). */
export function normalize(defs) {
  const full = desugar(defs).map((d, i) => normalizeLayer(i, d));
  if (!full.length || full[0].type !== "input") {
    throw new ModelFormatError(`${full.length ? where(0, full[0].type) : "layer 0"}: the first layer must be of type 'input'`);
  }
  const last = full.length - 1;
  if (!LOSS_TYPES.includes(full[last].type)) {
    throw new ModelFormatError(`${where(last, full[last].type)}: the last layer must be a loss layer (${LOSS_TYPES.join(", ")})`);
  }
  for (let i = 1; i < last; i++) {
    const t = full[i].type;
    if (t === "input" || LOSS_TYPES.includes(t)) {
      throw new ModelFormatError(`${where(i, t)}: may only appear ${t === "input" ? "first" : "last"}`);
    }
  }
  return full;
}
