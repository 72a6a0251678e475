// The network designer's model, without the DOM: the layer kinds and their fields, rows of
// makeLayers definitions, what they build (shapes, parameter counts, the engine's own error
// messages), presets, the optimizer's hyperparameters and the training settings, and the
// create_project message they make (docs/browser.md, "Design").
//
// A row is one makeLayers definition as a plain object ({type: "conv", sx: 5, ...}). A field
// left empty is absent, so the engine's default applies, as in a spec file; what is typed is
// sent as typed (a number when it reads as one, else the text), so a bad value is refused by
// the engine with the message Python gives.

import { describe } from "../engine/net.js";
import { LAYER_TYPES } from "../engine/spec.js";
import { COMMON, makeOptimizer, OPTIMIZERS } from "../engine/optim.js";

const ACTIVATION = { key: "activation", label: "activation", choices: ["", "relu", "sigmoid", "tanh", "maxout"] };
const DECAY = [
  { key: "l1_decay_mul", label: "L1 × decay", placeholder: "0" },
  { key: "l2_decay_mul", label: "L2 × decay", placeholder: "1" },
  { key: "bias_pref", label: "bias", placeholder: "0.1 with relu, else 0" },
];

/**
 * The fields the designer shows for each layer type (mlitb/nn/_spec.py's, and the makeLayers
 * shorthands a conv or fc layer takes). `initial`: put in when a layer is added (the required
 * fields, and ConvNetJS's usual values); `placeholder`: the engine's default, shown when empty.
 */
export const LAYER_FIELDS = {
  input: [
    { key: "out_sx", label: "width", initial: 32 },
    { key: "out_sy", label: "height", initial: 32 },
    { key: "out_depth", label: "depth", initial: 3 },
  ],
  conv: [
    { key: "sx", label: "filter width", initial: 5 },
    { key: "sy", label: "filter height", placeholder: "= width" },
    { key: "filters", label: "filters", initial: 16 },
    { key: "stride", label: "stride", placeholder: "1", initial: 1 },
    { key: "pad", label: "pad", placeholder: "0", initial: 2 },
    { ...ACTIVATION, initial: "relu" }, ...DECAY,
  ],
  pool: [
    { key: "sx", label: "window width", initial: 2 },
    { key: "sy", label: "window height", placeholder: "= width" },
    { key: "stride", label: "stride", placeholder: "2", initial: 2 },
    { key: "pad", label: "pad", placeholder: "0" },
  ],
  fc: [
    { key: "num_neurons", label: "neurons", initial: 32 },
    { ...ACTIVATION, initial: "relu" },
    { key: "drop_prob", label: "dropout after", placeholder: "none" }, ...DECAY,
  ],
  relu: [], sigmoid: [], tanh: [],
  maxout: [{ key: "group_size", label: "group size", placeholder: "2" }],
  dropout: [{ key: "drop_prob", label: "drop probability", placeholder: "0.5", initial: 0.5 }],
  lrn: [
    { key: "k", label: "k", initial: 1 },
    { key: "n", label: "n (odd)", initial: 5 },
    { key: "alpha", label: "alpha", initial: 0.0001 },
    { key: "beta", label: "beta", initial: 0.75 },
  ],
  softmax: [{ key: "num_classes", label: "classes", initial: 10 }],
  svm: [{ key: "num_classes", label: "classes", initial: 10 }],
  regression: [{ key: "num_neurons", label: "outputs", initial: 1 }],
};
export { LAYER_TYPES };

/** A new row of `type` with its initial fields. */
export function newLayer(type) {
  const row = { type };
  for (const f of LAYER_FIELDS[type] || []) if (f.initial !== undefined && f.initial !== "") row[f.key] = f.initial;
  return row;
}

/** What a field's text is sent as: an integer or a number when it reads as one, else the text
 * itself (the engine names it in its refusal); empty: absent. */
export function parseValue(text) {
  const t = String(text).trim();
  if (t === "") return undefined;
  if (t === "true") return true;
  if (t === "false") return false;
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t)) return Number(t);
  return t;
}

/** A value as the field shows it. */
export function showValue(v) { return v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v); }

/** The fields of `row` the designer has no input for (an imported spec may carry them): kept and
 * sent, so the engine names them if they are wrong. */
export function otherFields(row) {
  const known = new Set(["type", ...(LAYER_FIELDS[row.type] || []).map((f) => f.key)]);
  return Object.fromEntries(Object.entries(row).filter(([k]) => !known.has(k)));
}

/**
 * What `rows` build: {rows: [{outShape, params, error, layers}], numParams, error, errorRow}
 * (`layers`: the indices of the desugared layers the row became, as the messages count). A row's
 * shape and parameters are those of the layers it desugars to (a loss layer's include the fc
 * layer before it); `error` is the engine's message, on the row it names.
 */
export function analyze(rows) {
  const d = describe(rows);
  const out = rows.map(() => ({ outShape: null, params: 0, error: null, layers: [] }));
  // The engine's messages count desugared layers ("layer 4 (conv)" may be row 3, after the
  // relu desugaring put behind row 1): each row knows which of them it became.
  d.raw.forEach((row, index) => out[row].layers.push(index));
  for (const layer of d.layers) {
    const r = out[layer.raw];
    r.outShape = layer.outShape;
    r.params += layer.params;
  }
  let errorRow = null;
  if (d.error !== null) {
    errorRow = d.at === null ? 0 : d.desugared ? (d.raw[d.at] ?? rows.length - 1) : d.at;
    if (out[errorRow]) out[errorRow].error = d.error;
  }
  const complete = d.error === null;
  return { rows: out, numParams: complete ? d.numParams : null, error: d.error, errorRow };
}

/** "32×32×3" (width × height × depth), as the projects view shows input shapes. */
export function showShape(shape) { return shape ? `${shape[2]}×${shape[1]}×${shape[0]}` : "–"; }

// -- presets ------------------------------------------------------------------------------------
/** The nets of mlitb/datasets.py (CIFAR10_SPEC, CIFAR10_FAST_SPEC, DIGITS_SPEC): the tests check
 * they are equal. */
export const PRESETS = {
  cifar10: {
    title: "CIFAR-10 (the paper's net, 32×32 RGB)",
    spec: [
      { type: "input", out_sx: 32, out_sy: 32, out_depth: 3 },
      { type: "conv", sx: 5, filters: 16, stride: 1, pad: 2, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "conv", sx: 5, filters: 20, stride: 1, pad: 2, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "conv", sx: 5, filters: 20, stride: 1, pad: 2, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "softmax", num_classes: 10 },
    ],
  },
  "cifar10-fast": {
    title: "CIFAR-10 (the demo's net: 70% in about a minute, 32×32 RGB)",
    spec: [
      { type: "input", out_sx: 32, out_sy: 32, out_depth: 3 },
      { type: "conv", sx: 5, filters: 32, stride: 2, pad: 2, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "conv", sx: 3, filters: 48, stride: 1, pad: 1, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "conv", sx: 3, filters: 96, stride: 1, pad: 1, activation: "relu" },
      { type: "softmax", num_classes: 10 },
    ],
  },
  digits: {
    title: "digits (8×8 gray)",
    spec: [
      { type: "input", out_sx: 8, out_sy: 8, out_depth: 1 },
      { type: "conv", sx: 3, filters: 8, stride: 1, pad: 1, activation: "relu" },
      { type: "pool", sx: 2, stride: 2 },
      { type: "fc", num_neurons: 32, activation: "relu" },
      { type: "softmax", num_classes: 10 },
    ],
  },
};

/**
 * The training recipes of mlitb/recipes.py (what `mlitb demo` and `mlitb bench train` use): an
 * optimizer, its hyperparameters, the training settings and T. The tests check they equal
 * Python's; a recipe changed there must be changed here.
 */
export const RECIPES = {
  "cifar10-local": {
    title: "CIFAR-10: local Nesterov steps, cosine over 60 s, flips",
    optimizer: "nesterov", hyperparameters: { learning_rate: 0.015, momentum: 0.95, l2_decay: 5e-4 },
    training: { algorithm: "local", batch_size: 32, outer_optimizer: "average", outer_learning_rate: 1,
      schedule: "cosine", horizon: 60, horizon_unit: "seconds", warmup: 0.1, final_lr: 0, flip: true },
    iterationTime: 0.5,
  },
  "cifar10-gradient": {
    title: "CIFAR-10: the paper's (AdaGrad on the averaged gradient)",
    optimizer: "adagrad", hyperparameters: { learning_rate: 0.01 }, training: {}, iterationTime: 1,
  },
  "digits-local": {
    title: "digits: local Nesterov steps of 16",
    optimizer: "nesterov", hyperparameters: { learning_rate: 0.05, momentum: 0.9 },
    training: { algorithm: "local", batch_size: 16, outer_optimizer: "average" }, iterationTime: 1,
  },
  "digits-gradient": {
    title: "digits: Adam on the averaged gradient",
    optimizer: "adam", hyperparameters: { learning_rate: 0.02 }, training: {}, iterationTime: 1,
  },
};

/** The layer list of an imported file: a spec (a JSON list, what `mlitb project create --model`
 * reads), or a model file (its "layers"), as read_spec in mlitb/_cli_project.py takes them. */
export function importSpec(text) {
  let data;
  try { data = JSON.parse(text); } catch (err) { throw new Error(`not valid JSON: ${err.message}`); }
  if (data && typeof data === "object" && !Array.isArray(data) && "layers" in data) data = data.layers;
  if (!Array.isArray(data)) throw new Error("a model spec is a JSON list of layer definitions (or a model file)");
  if (!data.every((d) => d && typeof d === "object" && !Array.isArray(d))) {
    throw new Error("every layer definition must be an object");
  }
  return data.map((d) => ({ ...d }));
}

/** The spec as a file: the makeLayers list, which `mlitb project create --model` reads. */
export function exportSpec(rows) { return JSON.stringify(rows, null, 1) + "\n"; }

// -- optimizer and training ---------------------------------------------------------------------
export { OPTIMIZERS };

/** The hyperparameters of `optimizer` with their defaults (the engine's optimizers are ports of
 * mlitb/optim.py's, with the same names and defaults). */
export function hyperparameterDefaults(optimizer) {
  const hp = { ...makeOptimizer(optimizer, 1).hp };
  if (optimizer === "nesterov") delete hp.nesterov; // fixed: true
  return hp;
}
export const COMMON_HYPERPARAMETERS = Object.keys(COMMON);

/** The engine's refusal of these hyperparameters for `optimizer` (the master's words: the
 * engine's optimizers check what mlitb/optim.py checks), or null. */
export function checkHyperparameters(optimizer, hyperparameters) {
  try {
    makeOptimizer(optimizer, 1, hyperparameters);
    return null;
  } catch (err) {
    return err.message;
  }
}

/** The training settings the designer offers (mlitb.protocol.Training; the master checks them):
 * `algorithm` and `wire` are fixed at creation, the rest may change later with
 * set_hyperparameters. */
export const TRAINING_FIELDS = [
  { key: "algorithm", label: "algorithm", choices: ["", "gradient", "local"] },
  { key: "batch_size", label: "batch size (local)", placeholder: "32", only: "local" },
  { key: "outer_optimizer", label: "outer optimizer (local)", choices: ["", "average", "nesterov"], only: "local" },
  { key: "outer_learning_rate", label: "outer learning rate", placeholder: "1", only: "local" },
  { key: "outer_momentum", label: "outer momentum", placeholder: "0.9", only: "local" },
  { key: "schedule", label: "schedule", choices: ["", "constant", "cosine", "linear"] },
  { key: "horizon", label: "horizon", placeholder: "needed unless constant" },
  { key: "horizon_unit", label: "horizon unit", choices: ["", "samples", "seconds"] },
  { key: "warmup", label: "warmup (fraction)", placeholder: "0" },
  { key: "final_lr", label: "final lr (fraction)", placeholder: "0" },
  { key: "shift", label: "shift (pixels)", placeholder: "0" },
  { key: "flip", label: "flip left-right", choices: ["", "false", "true"] },
  { key: "aggregation", label: "aggregation", choices: ["", "mean", "median", "trimmed_mean", "centered_clip"] },
  { key: "wire", label: "wire (results)", choices: ["", "float32", "float16", "int8"] },
];

/** The training settings from the fields' texts ({key: text}); null when none is set (the
 * master's defaults: the paper's gradient algorithm, a constant rate). */
export function trainingFrom(texts) {
  const training = {};
  for (const f of TRAINING_FIELDS) {
    const value = parseValue(texts[f.key] ?? "");
    if (value === undefined) continue;
    if (f.only && (texts.algorithm || "gradient") !== f.only) continue;
    training[f.key] = value;
  }
  return Object.keys(training).length ? training : null;
}

/** Hyperparameters from the fields' texts: only those typed in (the others keep the
 * optimizer's defaults); flags as the wire carries them (0/1). */
export function hyperparametersFrom(texts) {
  const hp = {};
  for (const [key, text] of Object.entries(texts)) {
    const value = parseValue(text);
    if (value === undefined) continue;
    hp[key] = value === true ? 1 : value === false ? 0 : value;
  }
  return hp;
}

/**
 * Where a master's refusal points: {field} for "create_project.training.batch_size: …",
 * "create_project.iteration_time: …", or an optimizer's "learning_rate: …" (one of
 * `hyperparameterNames`); {layer} for "layer 3 (conv): …" (an index into the desugared layers);
 * {} otherwise.
 */
export function refusalTarget(message, hyperparameterNames = []) {
  if (/unknown optimizer/.test(message)) return { field: "optimizer" };
  let m = /\b(training|hyperparameters)\.([a-z][a-z0-9_]*)\b/.exec(message);
  if (m) return { field: `${m[1]}.${m[2]}` };
  m = /^([a-z][a-z0-9_]*):/.exec(message);
  if (m && hyperparameterNames.includes(m[1])) return { field: `hyperparameters.${m[1]}` };
  m = /\b(?:create_project\.)(iteration_time|name|optimizer|labels|samples_per_iteration|join_token|contributor_token)\b(?:\[\d+\])?\s*:/.exec(message);
  if (m) return { field: m[1] };
  if (/^labels:/.test(message)) return { field: "labels" }; // the engine's, checking the net
  m = /\blayer (\d+)\b/.exec(message);
  if (m) return { layer: Number(m[1]) };
  return {};
}

/** The create_project message (docs/protocol.md); the master validates every field again. With
 * `zoo` (an entry's name) the project starts from that closure instead of `rows`, and an empty
 * optimizer keeps the closure's. `labels`: comma-separated class names (empty: the first upload's
 * folders); `samplesPerIteration`: deterministic mode's samples per iteration; the tokens as
 * `newToken()` makes them (null: open to anyone, the operator alone uploads). */
export function createMessage({ name, rows, zoo = null, iterationTime, optimizer, hyperparameters, training,
  labels = "", samplesPerIteration = "", joinToken = null, contributorToken = null }) {
  const message = { type: "create_project", name, hyperparameters };
  if (zoo) message.zoo = zoo; else message.spec = rows.map((r) => ({ ...r }));
  if (optimizer) message.optimizer = optimizer;
  const t = parseValue(iterationTime ?? "");
  if (t !== undefined) message.iteration_time = t;
  if (training) message.training = training;
  const names = String(labels).split(",").map((l) => l.trim()).filter(Boolean);
  if (names.length) message.labels = names;
  const n = parseValue(samplesPerIteration ?? "");
  if (n !== undefined) message.samples_per_iteration = n;
  if (joinToken) message.join_token = joinToken;
  if (contributorToken) message.contributor_token = contributorToken;
  return message;
}

/** A fresh random token, as `mlitb project create --join-token` makes one: 18 random bytes,
 * base64url (24 characters). */
export function newToken() {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}
