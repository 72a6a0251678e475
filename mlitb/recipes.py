"""Training recipes that work: what ``mlitb demo`` and ``mlitb bench train`` start projects with.

A recipe is an optimizer, its hyperparameters, the training settings (``mlitb.training``) and T.
They were tuned on this project's demo nets on a 2-core machine; docs/performance.md has the
figures they reach and what each ingredient bought.
"""

from __future__ import annotations

from .protocol import Training

Recipe = tuple[str, dict[str, float], Training, float]
"""(optimizer, hyperparameters, training settings, iteration time T)."""


def cifar10_recipe(algorithm: str = "local", seconds: float = 60.0, *,
                   augment: bool = True, net: str = "fast") -> Recipe:
    """CIFAR-10 with the demo net (``net``: one of ``mlitb.datasets.CIFAR10_NETS``, ``fast``
    the demo's, ``paper`` the paper's ConvNetJS net), for a run of about ``seconds``.

    ``local``: each trainer takes Nesterov-SGD steps of 32 samples (learning rate 0.015,
    momentum 0.95, weight decay 5e-4) for its whole budget; the master averages the parameters
    every T = 0.5 s. The learning rate warms up over the first 10% of the run and follows a
    cosine to 0 at its end; ``augment``: horizontal flips. ``gradient``: the paper's recipe,
    AdaGrad (0.01) on the averaged gradient, T = 1 s.

    Averaging costs accuracy per sample (two trainers averaged every 44 steps end ~2 points
    below one trainer taking all the steps, in ``mlitb/bench/recipe.py``): half the rounds' length
    and a heavier momentum at half the rate win back more than a point of it.
    """
    if net not in ("fast", "paper"):
        raise ValueError(f"net: 'fast' or 'paper', got {net!r}")
    if algorithm == "gradient":
        return "adagrad", {"learning_rate": 0.01}, Training(), 1.0
    if algorithm != "local":
        raise ValueError(f"algorithm: 'local' or 'gradient', got {algorithm!r}")
    training = Training(algorithm="local", batch_size=32, outer_optimizer="average",
                        outer_learning_rate=1.0, schedule="cosine", horizon=seconds,
                        horizon_unit="seconds", warmup=0.1, final_lr=0.0, flip=augment)
    return "nesterov", {"learning_rate": 0.015, "momentum": 0.95, "l2_decay": 5e-4}, training, 0.5


def digits_recipe(algorithm: str = "local") -> Recipe:
    """The bundled 8x8 digits (1,438 training images): ``local`` Nesterov-SGD steps of 16
    samples at a constant learning rate 0.05, averaged every T = 1 s, no augmentation (a
    mirrored digit is another digit); ``gradient``: Adam (0.02) on the averaged gradient."""
    if algorithm == "gradient":
        return "adam", {"learning_rate": 0.02}, Training(), 1.0
    if algorithm != "local":
        raise ValueError(f"algorithm: 'local' or 'gradient', got {algorithm!r}")
    training = Training(algorithm="local", batch_size=16, outer_optimizer="average")
    return "nesterov", {"learning_rate": 0.05, "momentum": 0.9}, training, 1.0
