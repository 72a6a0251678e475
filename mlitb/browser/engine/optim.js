// The optimizers of mlitb/optim.py over one flat Float32Array of parameters, for a `local`
// project's INNER steps in a browser trainer (the master steps `gradient` projects itself). The
// update rules are mlitb/optim.py's, line for line, so a browser and a Python node step alike:
// ConvNetJS 0.3's trainer, except Adam's bias correction, which divides by (1 - beta^t) as in
// Kingma & Ba. The test vectors (tests/vectors/engine.json, "inner_steps") hold numpy's
// parameters after two steps of each, so the state carried from one step to the next is checked.
//
//   const opt = makeOptimizer("adam", net.numParams, { learning_rate: 0.001 },
//                             { l1Mul, l2Mul });          // from net.decayMultipliers()
//   opt.step(net.params, meanGrad);                       // in place; meanGrad is not changed
//
// Every optimizer shares, as in Python:
// - weight decay: the gradient stepped on is grad + l2_decay*l2_mul*p + l1_decay*l1_mul*sign(p),
//   with per-parameter multipliers from the net's layers (biases get 0). `grad` is a mean over
//   the batch, so the decay is not divided by the batch size;
// - the learning-rate decay: times lr_decay every lr_decay_every steps, never below lr_min
//   (a browser trainer turns it off: the master's schedule sets the rate of every round).
// Arithmetic is in doubles, rounded to float32 where a value is stored (the typed arrays), which
// agrees with numpy's float32 arithmetic to rounding.

/** The optimizer names a project may name (mlitb.optim.OPTIMIZERS). */
export const OPTIMIZERS = ["sgd", "nesterov", "adagrad", "adadelta", "adam"];

/** The hyperparameters every optimizer has, with their defaults (mlitb/optim.py _COMMON). */
export const COMMON = { learning_rate: 0.01, l1_decay: 0, l2_decay: 0, lr_decay: 1, lr_decay_every: 1, lr_min: 0 };
// Flags and counts arrive as JSON numbers on the wire (nesterov 0/1, lr_decay_every 3.0).
const FLAGS = new Set(["nesterov"]);
const COUNTS = new Set(["lr_decay_every"]);

/** Raised for an unknown optimizer or hyperparameter, or a value out of range (the message
 * names the field, as mlitb.errors.OptimizerError's does). */
export class OptimizerError extends Error {
  constructor(message) { super(message); this.name = "OptimizerError"; }
}

// What each hyperparameter may be (mlitb/optim.py _RULES): the interval [lo, hi) unless
// flagged, so the network designer refuses what the master refuses, in its words.
const RULES = {
  learning_rate: {}, l1_decay: {}, l2_decay: {}, lr_min: {},
  lr_decay: { lo: 0, hi: 1, loOpen: true, hiOpen: false },
  lr_decay_every: { lo: 1 },
  momentum: { lo: 0, hi: 1 }, ro: { lo: 0, hi: 1 }, beta1: { lo: 0, hi: 1 }, beta2: { lo: 0, hi: 1 },
  eps: { loOpen: true },
};
const pyG = (x) => (x === Infinity ? "inf" : String(x)); // Python's format(x, "g") for these bounds
const pyRepr = (v) => (typeof v === "string" ? `'${v}'` : v === true ? "True" : v === false ? "False" : String(v));

function checked(key, value) {
  if (FLAGS.has(key)) {
    if (value === true || value === 1) return true;
    if (value === false || value === 0) return false;
    throw new OptimizerError(`${key}: must be 0 (false) or 1 (true), got ${value}`);
  }
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new OptimizerError(`${key}: must be ${COUNTS.has(key) ? "an integer" : "a number"}, got ${pyRepr(value)}`);
  }
  if (COUNTS.has(key) && Number.isFinite(value) && !Number.isInteger(value)) {
    throw new OptimizerError(`${key}: must be a whole number, got ${value}`);
  }
  const { lo = 0, hi = Infinity, loOpen = false, hiOpen = true } = RULES[key] || {};
  const okLo = loOpen ? value > lo : value >= lo, okHi = hiOpen ? value < hi : value <= hi;
  if (!(Number.isFinite(value) && okLo && okHi)) {
    const span = `${loOpen ? "(" : "["}${pyG(lo)}, ${pyG(hi)}${hiOpen ? ")" : "]"}`;
    throw new OptimizerError(`${key}: must be finite and in ${span}, got ${value}`);
  }
  return value;
}

/** Base class: weight decay, the learning-rate decay, the step count and hyperparameters. A
 * subclass names its DEFAULTS and SLOTS (per-parameter state, zero at the start) and
 * implements update(p, g, lr) over the decayed gradient g. */
export class Optimizer {
  static optimizerName = "";
  static DEFAULTS = {};
  static SLOTS = [];

  /**
   * @param numParams length of the parameter vector
   * @param hyperparameters overrides of the defaults (unknown names are refused)
   * @param options.l1Mul, options.l2Mul per-parameter decay multipliers (default all 1)
   */
  constructor(numParams, hyperparameters = {}, { l1Mul = null, l2Mul = null } = {}) {
    this.numParams = numParams;
    this.hp = { ...COMMON, ...this.constructor.DEFAULTS };
    this.setHyperparameters(hyperparameters);
    this.l1Mul = l1Mul === null ? new Float32Array(numParams).fill(1) : Float32Array.from(l1Mul);
    this.l2Mul = l2Mul === null ? new Float32Array(numParams).fill(1) : Float32Array.from(l2Mul);
    if (this.l1Mul.length !== numParams || this.l2Mul.length !== numParams) {
      throw new OptimizerError(`l1_mul, l2_mul: must hold ${numParams} multipliers`);
    }
    this.state = Object.fromEntries(this.constructor.SLOTS.map((s) => [s, new Float32Array(numParams)]));
    this.g = new Float32Array(numParams); // the decayed gradient, reused by every step
    this.t = 0; // steps taken: Adam's bias correction and the decay schedule count them
  }

  get name() { return this.constructor.optimizerName; }
  get learningRate() { return this.hp.learning_rate; }

  /** Change hyperparameters; all are checked before any is applied. */
  setHyperparameters(changes) {
    const next = {};
    for (const [key, value] of Object.entries(changes)) {
      if (!(key in this.hp)) {
        throw new OptimizerError(`${key}: unknown hyperparameter for ${this.name} (known: ${Object.keys(this.hp).sort().join(", ")})`);
      }
      next[key] = checked(key, value);
    }
    Object.assign(this.hp, next);
  }

  /** Update `params` in place from `grad`, the mean gradient of one batch. */
  step(params, grad) {
    const n = this.numParams, g = this.g, { l1_decay: l1, l2_decay: l2 } = this.hp;
    if (params.length !== n || grad.length !== n) {
      throw new OptimizerError(`params, grad: must hold ${n} values, got ${params.length} and ${grad.length}`);
    }
    for (let i = 0; i < n; i++) {
      if (!Number.isFinite(grad[i])) throw new OptimizerError("grad: contains NaN or infinity; the step was not taken");
    }
    // Decay as Python adds it: the l2 term, then the l1 term, each rounded to float32.
    g.set(grad);
    if (l2) for (let i = 0; i < n; i++) g[i] += l2 * this.l2Mul[i] * params[i];
    if (l1) for (let i = 0; i < n; i++) g[i] += l1 * this.l1Mul[i] * Math.sign(params[i]);
    this.t += 1;
    this.update(params, g, this.hp.learning_rate);
    if (this.t % this.hp.lr_decay_every === 0) {
      const lr = this.hp.learning_rate;
      // The floor stops the decay; it never raises a rate set below it.
      this.hp.learning_rate = Math.max(lr * this.hp.lr_decay, Math.min(lr, this.hp.lr_min));
    }
  }

  update(p, g, lr) { throw new Error("not implemented"); } // eslint-disable-line no-unused-vars
}

/** SGD: plain (momentum 0), heavy-ball momentum (the default, 0.9), or Nesterov's in
 * ConvNetJS's form (nesterov true). */
export class SGD extends Optimizer {
  static optimizerName = "sgd";
  static DEFAULTS = { momentum: 0.9, nesterov: false };
  static SLOTS = ["velocity"];

  update(p, g, lr) {
    const mu = this.hp.momentum, v = this.state.velocity, n = p.length;
    if (this.hp.nesterov) {
      // ConvNetJS's Nesterov: v' = mu v + lr g; p += mu v - (1 + mu) v'.
      for (let i = 0; i < n; i++) {
        const dx = mu * v[i]; // momentum times the OLD velocity
        v[i] = dx + lr * g[i];
        p[i] += dx - (1 + mu) * v[i];
      }
    } else if (mu === 0) {
      for (let i = 0; i < n; i++) p[i] -= lr * g[i];
    } else {
      for (let i = 0; i < n; i++) {
        v[i] = mu * v[i] - lr * g[i];
        p[i] += v[i];
      }
    }
  }
}

/** AdaGrad (Duchi et al. 2011): each step scaled by the parameter's gradient history. */
export class AdaGrad extends Optimizer {
  static optimizerName = "adagrad";
  static DEFAULTS = { eps: 1e-8 };
  static SLOTS = ["grad_sq_sum"];

  update(p, g, lr) {
    const total = this.state.grad_sq_sum, eps = this.hp.eps;
    for (let i = 0; i < p.length; i++) {
      total[i] += g[i] * g[i];
      p[i] -= (lr * g[i]) / Math.sqrt(total[i] + eps);
    }
  }
}

/** Adadelta (Zeiler 2012): decaying averages of squared gradients and squared steps. As in
 * Python (and PyTorch), learning_rate (default 1.0) multiplies the step, and the average of
 * squared steps tracks the unscaled one. */
export class Adadelta extends Optimizer {
  static optimizerName = "adadelta";
  static DEFAULTS = { learning_rate: 1.0, ro: 0.95, eps: 1e-6 };
  static SLOTS = ["grad_sq_avg", "step_sq_avg"];

  update(p, g, lr) {
    const { ro, eps } = this.hp, eg = this.state.grad_sq_avg, ex = this.state.step_sq_avg;
    for (let i = 0; i < p.length; i++) {
      eg[i] = ro * eg[i] + (1 - ro) * g[i] * g[i];
      const dx = Math.fround(-Math.sqrt((ex[i] + eps) / (eg[i] + eps)) * g[i]); // a float32 vector in Python
      ex[i] = ro * ex[i] + (1 - ro) * dx * dx;
      p[i] += lr * dx;
    }
  }
}

/** Adam (Kingma & Ba 2015), with bias correction: m and v are DIVIDED by (1 - beta^t), t the
 * steps taken. (ConvNetJS 0.3 multiplies, which makes its first step ~10x too large.) The step
 * count is state: it carries over between rounds with the moments. */
export class Adam extends Optimizer {
  static optimizerName = "adam";
  static DEFAULTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
  static SLOTS = ["moment1", "moment2"];

  update(p, g, lr) {
    const { beta1: b1, beta2: b2, eps } = this.hp, m = this.state.moment1, v = this.state.moment2;
    const c1 = 1 - b1 ** this.t, c2 = 1 - b2 ** this.t;
    for (let i = 0; i < p.length; i++) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      p[i] -= (lr * m[i] / c1) / (Math.sqrt(v[i] / c2) + eps);
    }
  }
}

const CLASSES = { sgd: SGD, adagrad: AdaGrad, adadelta: Adadelta, adam: Adam };

/**
 * The optimizer `name` (one of OPTIMIZERS) for `numParams` parameters. "nesterov" is "sgd" with
 * nesterov true. Hyperparameters as the wire carries them (numbers; flags 0/1).
 */
export function makeOptimizer(name, numParams, hyperparameters = {}, multipliers = {}) {
  if (name === "nesterov") {
    if ("nesterov" in hyperparameters && !checked("nesterov", hyperparameters.nesterov)) {
      throw new OptimizerError("nesterov: must be true for the 'nesterov' optimizer");
    }
    return new SGD(numParams, { ...hyperparameters, nesterov: true }, multipliers);
  }
  const cls = Object.hasOwn(CLASSES, name) ? CLASSES[name] : null;
  if (cls === null) throw new OptimizerError(`name: unknown optimizer '${name}' (known: ${OPTIMIZERS.join(", ")})`);
  return new cls(numParams, hyperparameters, multipliers);
}
