"""Optimizers the master applies to the one flat float32 parameter vector.

Each iteration the master sums the workers' gradients, divides by the number of samples and calls
``opt.step(params, grad)`` once; the step works in place and in whole-vector numpy operations.
The update rules are ConvNetJS 0.3's trainer (so models and settings carry over), except Adam's
bias correction, which follows Kingma & Ba. Every optimizer shares:

- weight decay: the effective gradient is ``grad + l2_decay*l2_mul*p + l1_decay*l1_mul*sign(p)``,
  with per-parameter multipliers from the net (biases get 0). ConvNetJS divides the decay terms by
  the batch size along with the gradient; here ``grad`` is already a mean, so the decay is not;
- the paper's learning-rate schedule: times ``lr_decay`` every ``lr_decay_every`` steps, never
  below ``lr_min``. ``hyperparameters()["learning_rate"]`` is the *current* rate, so
  ``hyperparameters()`` plus ``state()`` resume a run exactly.

    opt = make_optimizer("adagrad", net.num_params, learning_rate=0.01)
    opt.step(net.params, summed_grads / count)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, NamedTuple, TypeAlias

import numpy as np

from mlitb.errors import OptimizerError

__all__ = ["OPTIMIZERS", "SGD", "AdaGrad", "Adadelta", "Adam", "Optimizer", "make_optimizer"]

F32 = np.float32
Hyperparameter: TypeAlias = float | int | bool


class _Rule(NamedTuple):
    """What a hyperparameter may be: its kind and the interval ``[lo, hi)`` (or as flagged)."""
    kind: type
    lo: float = 0.0
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = True


_RULES: dict[str, _Rule] = {
    "learning_rate": _Rule(float),
    "l1_decay": _Rule(float),
    "l2_decay": _Rule(float),
    "lr_decay": _Rule(float, 0.0, 1.0, lo_open=True, hi_open=False),
    "lr_decay_every": _Rule(int, 1.0),
    "lr_min": _Rule(float),
    "momentum": _Rule(float, 0.0, 1.0),
    "nesterov": _Rule(bool),
    "eps": _Rule(float, lo_open=True),
    "ro": _Rule(float, 0.0, 1.0),
    "beta1": _Rule(float, 0.0, 1.0),
    "beta2": _Rule(float, 0.0, 1.0),
}
_COMMON: dict[str, Hyperparameter] = {"learning_rate": 0.01, "l1_decay": 0.0, "l2_decay": 0.0,
                                      "lr_decay": 1.0, "lr_decay_every": 1, "lr_min": 0.0}


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return repr(value)


def _check(field: str, value: object) -> Hyperparameter:
    """Return ``value`` as the plain Python type of ``field``, or raise naming the field."""
    rule = _RULES[field]
    is_bool = isinstance(value, (bool, np.bool_))
    if rule.kind is bool:
        if not is_bool:
            raise OptimizerError(f"{field}: must be true or false, got {value!r}")
        return bool(value)
    kinds = (int, np.integer) if rule.kind is int else (int, float, np.integer, np.floating)
    if is_bool or not isinstance(value, kinds):  # bool is an int to Python, never to us
        what = "an integer" if rule.kind is int else "a number"
        raise OptimizerError(f"{field}: must be {what}, got {value!r}")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    ok_lo = x > rule.lo if rule.lo_open else x >= rule.lo
    ok_hi = x < rule.hi if rule.hi_open else x <= rule.hi
    if not (math.isfinite(x) and ok_lo and ok_hi):
        left, right = "(" if rule.lo_open else "[", ")" if rule.hi_open else "]"
        span = f"{left}{rule.lo:g}, {rule.hi:g}{right}"
        raise OptimizerError(f"{field}: must be finite and in {span}, got {value!r}")
    return int(value) if rule.kind is int else x


def _vector(field: str, value: object, size: int, *, nonnegative: bool = True) -> np.ndarray:
    """A validated float32 copy of a per-parameter vector (the caller keeps its own array)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu" or value.shape != (size,):
        raise OptimizerError(f"{field}: must be a numeric array of shape ({size},),"
                             f" got {_describe(value)}")
    out = value.astype(F32)
    if not np.isfinite(out).all() or (nonnegative and (out < 0).any()):
        raise OptimizerError(f"{field}: must be finite{' and >= 0' if nonnegative else ''}")
    return out


def _count(field: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise OptimizerError(f"{field}: must be an integer >= {lo}, got {value!r}")
    return int(value)


def _moved(old: np.ndarray, index_map: np.ndarray, size: int, fill: float) -> np.ndarray:
    out = np.full(size, fill, dtype=F32)
    out[index_map] = old
    return out


class Optimizer:
    """Base class: weight decay, the learning-rate schedule, validation, state and growth.

    A subclass names its hyperparameters and defaults in ``DEFAULTS``, its per-parameter
    accumulators in ``SLOTS``, and implements ``_update``. Build one with ``make_optimizer``.
    """

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Hyperparameter]] = {}
    SLOTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_params: int, **hyperparameters: Hyperparameter | np.ndarray) -> None:
        """``hyperparameters``: the scalars in ``hyperparameters()``, and optionally ``l1_mul``
        and ``l2_mul``, float arrays of ``num_params`` multipliers (default all 1.0).

        (The vectors share the keyword dict so ``make_optimizer(name, n, **hp)`` type-checks.)
        """
        n = self.num_params = _count("num_params", num_params, 0)
        l1_mul, l2_mul = hyperparameters.pop("l1_mul", None), hyperparameters.pop("l2_mul", None)
        self._hp: dict[str, Hyperparameter] = {**_COMMON, **self.DEFAULTS}
        self._update_hyperparameters(hyperparameters)
        # Per-parameter decay multipliers; read them, change them only through grow().
        self.l1_mul = np.ones(n, F32) if l1_mul is None else _vector("l1_mul", l1_mul, n)
        self.l2_mul = np.ones(n, F32) if l2_mul is None else _vector("l2_mul", l2_mul, n)
        self._acc = {slot: np.zeros(n, F32) for slot in self.SLOTS}
        self._t = 0
        self.lr_scale = 1.0
        """The schedule's multiplier of the learning rate for the next steps (set by the project
        each iteration, ``mlitb.training.lr_factor``); not a hyperparameter, not state."""

    @property
    def learning_rate(self) -> float:
        """The current learning rate, after the schedule's decay so far."""
        return float(self._hp["learning_rate"])

    @property
    def step_count(self) -> int:
        return self._t

    def _f(self, key: str) -> float:
        return float(self._hp[key])

    def hyperparameters(self) -> dict[str, Hyperparameter]:
        """Plain JSON-ready values; ``make_optimizer(opt.name, n, **these)`` rebuilds ``opt``."""
        return dict(self._hp)

    def set_hyperparameters(self, **changes: Hyperparameter) -> None:
        """Change hyperparameters live; all are checked before any is applied."""
        self._update_hyperparameters(changes)

    def _update_hyperparameters(self, changes: Mapping[str, object]) -> None:
        for key in changes:
            if key not in self._hp:
                raise OptimizerError(f"{key}: unknown hyperparameter for {self.name or 'optimizer'}"
                                     f" (known: {', '.join(sorted(self._hp))})")
        self._hp.update({key: _check(key, value) for key, value in changes.items()})

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Update ``params`` in place from ``grad``, the mean gradient of one iteration."""
        n = self.num_params
        if not isinstance(params, np.ndarray) or params.dtype != F32 or params.shape != (n,) \
                or not params.flags.writeable:
            raise OptimizerError(f"params: must be a writeable float32 array of shape ({n},),"
                                 f" got {_describe(params)}")
        if not isinstance(grad, np.ndarray) or grad.dtype.kind != "f" or grad.shape != (n,):
            raise OptimizerError(f"grad: must be a float array of shape ({n},),"
                                 f" got {_describe(grad)}")
        if not np.isfinite(grad).all():  # one bad gradient would poison the model for good
            raise OptimizerError("grad: contains NaN or infinity; the step was not taken")
        g = grad.astype(F32)  # a copy: the decay terms go into it, the caller's array stays as is
        if self._hp["l2_decay"]:
            g += self._f("l2_decay") * self.l2_mul * params
        if self._hp["l1_decay"]:
            g += self._f("l1_decay") * self.l1_mul * np.sign(params)
        self._t += 1
        self._update(params, g, self.learning_rate * self.lr_scale)
        if self._t % int(self._hp["lr_decay_every"]) == 0:
            lr = self.learning_rate
            # The floor stops the decay; it never raises a rate an operator set below it.
            self._hp["learning_rate"] = max(lr * self._f("lr_decay"), min(lr, self._f("lr_min")))

    def _update(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray | int]:
        """Copies of the accumulators, and the step count as ``"step"``."""
        out: dict[str, np.ndarray | int] = {slot: a.copy() for slot, a in self._acc.items()}
        out["step"] = self._t
        return out

    def load_state(self, state: Mapping[str, object]) -> None:
        """Restore what ``state()`` returned (checked whole before anything changes)."""
        if not isinstance(state, Mapping):
            raise OptimizerError(f"state: must be a mapping, got {type(state).__name__}")
        odd = sorted({"step", *self.SLOTS} ^ set(state))  # keys missing or unknown
        if odd:
            where = "missing from" if odd[0] not in state else "unknown in"
            raise OptimizerError(f"{odd[0]}: {where} {self.name} state")
        step = _count("step", state["step"], 0)
        acc = {}
        for slot in self.SLOTS:
            value = state[slot]
            if not isinstance(value, np.ndarray) or value.dtype != F32:
                raise OptimizerError(f"{slot}: must be a float32 array, got {_describe(value)}")
            acc[slot] = _vector(slot, value, self.num_params, nonnegative=False)
        self._acc, self._t = acc, step

    def grow(self, index_map: np.ndarray, new_size: int, *, l1_mul: np.ndarray | None = None,
             l2_mul: np.ndarray | None = None) -> None:
        """Follow the net as it grows: old parameter ``i`` moves to ``index_map[i]``.

        New entries start with empty accumulators and multipliers 1.0, unless new multiplier
        vectors (of ``new_size``) are given. The step count is kept, so Adam's bias correction
        treats new entries as old ones: their first updates are smaller than a fresh start's.
        """
        n = self.num_params
        new_size = _count("new_size", new_size, n)
        if not isinstance(index_map, np.ndarray) or index_map.dtype.kind not in "iu" \
                or index_map.shape != (n,):
            raise OptimizerError(f"index_map: must be an integer array of shape ({n},),"
                                 f" got {_describe(index_map)}")
        if n and (index_map.min() < 0 or index_map.max() >= new_size
                  or np.unique(index_map).size != n):
            raise OptimizerError(f"index_map: must send the {n} parameters to distinct indices"
                                 f" in [0, {new_size})")
        m1 = (_moved(self.l1_mul, index_map, new_size, 1.0) if l1_mul is None
              else _vector("l1_mul", l1_mul, new_size))
        m2 = (_moved(self.l2_mul, index_map, new_size, 1.0) if l2_mul is None
              else _vector("l2_mul", l2_mul, new_size))
        self._acc = {s: _moved(a, index_map, new_size, 0.0) for s, a in self._acc.items()}
        self.l1_mul, self.l2_mul, self.num_params = m1, m2, new_size


class SGD(Optimizer):
    """Stochastic gradient descent: plain (``momentum=0``), heavy-ball momentum (the default,
    0.9), or Nesterov's (``nesterov=True``).

    The baseline, with the least state (one vector); a good choice when the gradient scale is
    known and a learning rate has been tuned. Momentum smooths the noise of small iterations.
    """

    name = "sgd"
    DEFAULTS: ClassVar[dict[str, Hyperparameter]] = {"momentum": 0.9, "nesterov": False}
    SLOTS = ("velocity",)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        mu, v = self._f("momentum"), self._acc["velocity"]
        if self._hp["nesterov"]:
            dx = mu * v  # momentum * the old velocity
            v *= mu
            v += lr * g
            p += dx - (1.0 + mu) * v
        elif mu == 0.0:
            p -= lr * g
        else:
            v *= mu
            v -= lr * g
            p += v


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011), the MLitB paper's default.

    Scales each parameter's step by its gradient history, so one learning rate suits weights
    with very different gradient scales. Steps only shrink: prefer Adam for long runs.
    """

    name = "adagrad"
    DEFAULTS: ClassVar[dict[str, Hyperparameter]] = {"eps": 1e-8}
    SLOTS = ("grad_sq_sum",)

    def _update(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        total = self._acc["grad_sq_sum"]
        total += g * g
        p -= lr * g / np.sqrt(total + self._f("eps"))


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012): AdaGrad with decaying averages and no learning rate to tune.

    ``learning_rate`` (default 1.0) only multiplies the step Adadelta computes; as in PyTorch the
    average of squared steps tracks the unscaled step. ConvNetJS has no multiplier (1.0).
    Start slowly with the default ``eps``: the first steps are about ``sqrt(eps)``.
    """

    name = "adadelta"
    DEFAULTS: ClassVar[dict[str, Hyperparameter]] = {"learning_rate": 1.0, "ro": 0.95, "eps": 1e-6}
    SLOTS = ("grad_sq_avg", "step_sq_avg")

    def _update(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        ro, eps = self._f("ro"), self._f("eps")
        eg, ex = self._acc["grad_sq_avg"], self._acc["step_sq_avg"]
        eg *= ro
        eg += (1.0 - ro) * g * g
        dx = -np.sqrt((ex + eps) / (eg + eps)) * g
        ex *= ro
        ex += (1.0 - ro) * dx * dx
        p += lr * dx


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): momentum plus per-parameter scaling, with bias correction.

    The usual first choice when AdaGrad's shrinking steps stall training. Steps are about
    ``learning_rate`` in size whatever the gradient's scale.
    """

    name = "adam"
    DEFAULTS: ClassVar[dict[str, Hyperparameter]] = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    SLOTS = ("moment1", "moment2")

    def _update(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        b1, b2 = self._f("beta1"), self._f("beta2")
        m, v = self._acc["moment1"], self._acc["moment2"]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        # Bias correction DIVIDES by (1 - beta^t). ConvNetJS 0.3 multiplies instead, which makes
        # its first step ~10x too large (0.01*g / 0.001*|g| with the default betas); not copied.
        m_hat = m / (1.0 - b1 ** self._t)
        v_hat = v / (1.0 - b2 ** self._t)
        p -= lr * m_hat / (np.sqrt(v_hat) + self._f("eps"))


def from_wire(values: Mapping[str, float]) -> dict[str, Hyperparameter]:
    """Hyperparameters as the wire carries them (every value a JSON number) -> their kinds:
    counts such as ``lr_decay_every`` from integral numbers, flags such as ``nesterov`` from 0 or
    1. Unknown names pass through for the optimizer to refuse; a count that is not whole or a flag
    that is not 0/1 raises ``OptimizerError`` naming the field."""
    out: dict[str, Hyperparameter] = {}
    for key, value in values.items():
        rule = _RULES.get(key)
        if rule is not None and rule.kind is int and isinstance(value, float):
            if not value.is_integer():
                raise OptimizerError(f"{key}: must be a whole number, got {value!r}")
            out[key] = int(value)
        elif rule is not None and rule.kind is bool and not isinstance(value, bool):
            if value not in (0, 1):
                raise OptimizerError(f"{key}: must be 0 (false) or 1 (true), got {value!r}")
            out[key] = bool(value)
        else:
            out[key] = value
    return out


_CLASSES: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, AdaGrad, Adadelta, Adam)}
OPTIMIZERS: tuple[str, ...] = ("sgd", "nesterov", "adagrad", "adadelta", "adam")


def make_optimizer(name: str, num_params: int,
                   **hyperparameters: Hyperparameter | np.ndarray) -> Optimizer:
    """Build the optimizer ``name`` (one of ``OPTIMIZERS``) for ``num_params`` parameters.

    ``hyperparameters`` as for ``Optimizer`` (scalars, and ``l1_mul``/``l2_mul`` vectors).
    ``"nesterov"`` is ``"sgd"`` with ``nesterov=True``. Raises ``OptimizerError`` naming the
    field for an unknown name or hyperparameter, or an out-of-range value.
    """
    if name == "nesterov":
        if not _check("nesterov", hyperparameters.get("nesterov", True)):
            raise OptimizerError("nesterov: must be true for the 'nesterov' optimizer")
        name, hyperparameters = "sgd", {**hyperparameters, "nesterov": True}
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise OptimizerError(f"name: unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    return cls(num_params, **hyperparameters)
