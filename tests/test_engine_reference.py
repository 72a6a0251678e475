"""The numpy engine against PyTorch: outputs, loss and every gradient, for the same weights.

PyTorch is an independent implementation of the same layers, so this is the engine's gradient check
against a second opinion (the finite-difference checks live in test_nn_gradients.py). Batch sizes
1, 3 and 17 are not multiples of the engine's chunk of 8, so the chunk loop's edges are covered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlitb.bench.engine import DEMO_NET, torch_loss, torch_model
from mlitb.datasets import CIFAR10_FAST_SPEC
from mlitb.nn import Net, _conv

torch = pytest.importorskip("torch", reason="PyTorch is the reference; pip install torch==2.13.0")

NETS: dict[str, list[dict[str, Any]]] = {
    "demo": DEMO_NET,
    # The demo's CIFAR-10 net: a strided 5x5 first layer, 3x3 convs of 48 and 96 filters, an fc
    # layer on a 4x4x96 input.
    "fast": CIFAR10_FAST_SPEC,
    # Stride 2 with padding, a non-square filter on a non-square input, 3/2 pooling with padding
    # (the general pooling path), an fc layer with sigmoid, tanh activations.
    "strided": [
        {"type": "input", "out_sx": 11, "out_sy": 9, "out_depth": 2},
        {"type": "conv", "sx": 3, "sy": 2, "filters": 5, "stride": 2, "pad": 1,
         "activation": "tanh"},
        {"type": "pool", "sx": 3, "stride": 2, "pad": 1},
        {"type": "fc", "num_neurons": 7, "activation": "sigmoid"},
        {"type": "softmax", "num_classes": 4},
    ],
    # No padding, odd sizes (pooling not by pairs), relu before 2x2 pooling with a leftover column.
    "odd": [
        {"type": "input", "out_sx": 9, "out_sy": 7, "out_depth": 3},
        {"type": "conv", "sx": 3, "filters": 4, "stride": 1, "pad": 0, "activation": "relu"},
        {"type": "pool", "sx": 2, "stride": 2},
        {"type": "conv", "sx": 2, "sy": 1, "filters": 6, "stride": 1, "pad": 1,
         "activation": "relu"},
        {"type": "fc", "num_neurons": 5, "activation": "tanh"},
        {"type": "softmax", "num_classes": 3},
    ],
    # Fully connected only, and the other two losses.
    "mlp_svm": [
        {"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 6},
        {"type": "fc", "num_neurons": 8, "activation": "relu"},
        {"type": "fc", "num_neurons": 5, "activation": "tanh"},
        {"type": "svm", "num_classes": 4},
    ],
    "conv_regression": [
        {"type": "input", "out_sx": 6, "out_sy": 6, "out_depth": 1},
        {"type": "conv", "sx": 3, "filters": 3, "stride": 1, "pad": 1, "activation": "sigmoid"},
        {"type": "pool", "sx": 2, "stride": 2},
        {"type": "regression", "num_neurons": 2},
    ],
}


def _targets(net: Net, n: int, rng: np.random.Generator) -> np.ndarray:
    if net.is_classifier:
        return rng.integers(0, net.num_outputs, n)
    return rng.standard_normal((n, net.num_outputs), dtype=np.float32)


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked-gemm", "plain-gemm"])
@pytest.mark.parametrize("batch", [1, 3, 17])
@pytest.mark.parametrize("name", sorted(NETS))
def test_matches_pytorch(name: str, batch: int, stacked: bool,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Both ways of multiplying, whichever this machine's BLAS would pick.
    monkeypatch.setattr(_conv, "_blas_has_small_gemm", lambda: stacked)
    rng = np.random.default_rng(batch)
    net = Net(NETS[name], seed=7)
    # Non-zero biases, so a bias that is dropped or misplaced shows.
    net.params += 0.1 * rng.standard_normal(net.num_params, dtype=np.float32)
    x = rng.standard_normal((batch, *net.input_shape), dtype=np.float32)
    y = _targets(net, batch, rng)

    model = torch_model(net).double()  # float64: the reference's own rounding stays out of it
    tx = torch.from_numpy(x.astype(np.float64))
    ty = torch.from_numpy(y if net.is_classifier else y.astype(np.float64))
    out = model(tx)
    loss = torch_loss(net, out, ty)
    loss.backward()
    ref_loss = float(loss.detach())
    ref_grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    ref_out = out.softmax(dim=1) if net.loss_layer.type == "softmax" else out
    ref_out = ref_out.detach().numpy()

    _close(net.forward(x), ref_out, "forward")
    _close(net.predict(x, chunk=2), ref_out, "predict")
    stats = net.accumulate_gradient(x, y)
    assert stats.count == batch
    assert stats.loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)
    if net.is_classifier:
        assert stats.correct == int((ref_out.argmax(axis=1) == y).sum())
    assert net.grads.dtype == np.float32 and net.grads.shape == ref_grads.shape
    _close(net.grads, ref_grads, "gradients")
    evaluated = net.evaluate(x, y, chunk=5)
    assert evaluated.loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)

    # Gradients add up across calls and chunk sizes, until zeroed.
    net.accumulate_gradient(x, y, chunk=3)
    _close(net.grads, 2 * ref_grads, "second accumulation")
    net.zero_grads()
    net.accumulate_gradient(x, y, chunk=batch)
    _close(net.grads, ref_grads, "one chunk")


def test_hot_path_stays_float32() -> None:
    """No float64 sneaks into activations or gradients (it would halve the engine's speed)."""
    net = Net(DEMO_NET, seed=1)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    seen: list[str] = []
    for layer in net.layers:
        fwd, bwd = layer.forward, layer.backward

        def forward(a: np.ndarray, training: bool, _f: Any = fwd, _t: str = layer.type) -> Any:
            out = _f(a, training)
            seen.append(f"{_t} forward {out.dtype}")
            return out

        def backward(d: np.ndarray, *args: Any, _b: Any = bwd, _t: str = layer.type,
                     **kwargs: Any) -> Any:
            out = _b(d, *args, **kwargs)
            if out is not None:
                seen.append(f"{_t} backward {out.dtype}")
            return out

        layer.forward, layer.backward = forward, backward  # type: ignore[method-assign]
    net.accumulate_gradient(x, np.array([0, 1, 2]))
    assert seen and all(s.endswith("float32") for s in seen), seen


def test_copies_and_pickles_compute_like_the_original() -> None:
    """Layers keep scratch buffers and strided views of them between calls; a deep copy or a
    pickle of a used net must not share or freeze them."""
    import copy
    import pickle

    rng = np.random.default_rng(3)
    net = Net(DEMO_NET, seed=2)
    x = rng.standard_normal((5, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 5)
    net.accumulate_gradient(x, y)  # fills the buffers
    x2 = rng.standard_normal((5, 3, 32, 32), dtype=np.float32)
    expected = net.forward(x2)
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        np.testing.assert_array_equal(twin.forward(x2), expected)
        twin.zero_grads()
        net.zero_grads()
        twin.accumulate_gradient(x2, y)
        net.accumulate_gradient(x2, y)
        np.testing.assert_array_equal(twin.grads, net.grads)


def test_bench_engine_runs_and_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``mlitb/bench/engine.py`` end to end, with measurements too short to mean anything."""
    import json

    from mlitb.bench import engine as bench_engine

    rows = bench_engine.run([1, 3], seconds=0.01, rounds=2, as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in report["rows"]] == [1, 3]
    assert all(r.ours > 0 and r.torch and r.ratio for r in rows)
    assert report["env"]["torch"] == torch.__version__
    assert report["env"]["blas_threads"] == 1 or report["env"]["pinned_by"] != "threadpoolctl"
