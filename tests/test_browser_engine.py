"""The browser's JavaScript engine computes what the numpy engine computes (design principle 5).

tests/vectors/engine.json holds test vectors made by the numpy engine (``python -m
mlitb.nn._vectors``). Here (a) Python checks that the committed file still matches the numpy
engine, so a change of the engine's math that is not carried into the vectors fails; (b) headless
Chromium runs every vector through mlitb/browser/engine (mlitb/browser/engine/test.html) and each output,
loss, gradient and input gradient must agree within the file's tolerance (1e-5 relative to
scale), and every bad spec must fail with Python's message; (c) the inner optimizers of a
``local`` project (mlitb/browser/engine/optim.js) take the steps mlitb.optim takes, state carried from
the first step to the second, and the augmentation transform (mlitb/browser/engine/augment.js) moves
and mirrors as mlitb.training.augment does, its random draws in range and seeded.

The browser half needs ``pip install playwright`` and Debian's Chromium at /usr/bin/chromium
(``apt-get install -y chromium``); without them it skips and says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mlitb.bench.browser import serve_static
from mlitb.nn import LAYER_TYPES, Net
from mlitb.nn._vectors import DEFAULT_PATH, TOLERANCE, decode, generate

REGENERATE = "the numpy engine changed: run `python -m mlitb.nn._vectors` and commit the file"


def _rel(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        return float("inf")
    diff = float(np.abs(expected - actual).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return 0.0 if diff == 0 else diff / (scale or np.finfo(float).tiny)


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


# -- (a) the file against the numpy engine ------------------------------------------------------
def test_vectors_file_is_small_and_covers_every_layer_type(committed: dict[str, Any]) -> None:
    assert DEFAULT_PATH.stat().st_size < 1_000_000
    types = {d["type"] for case in committed["cases"] for d in case["normalized"]}
    assert types == set(LAYER_TYPES)
    names = [case["name"] for case in committed["cases"]]
    assert "CIFAR-10 demo net" in names and len(set(names)) == len(names)
    assert committed["tolerance"] == TOLERANCE


def test_committed_vectors_match_a_fresh_generation(committed: dict[str, Any]) -> None:
    fresh = generate()
    assert [c["name"] for c in committed["cases"]] == [c["name"] for c in fresh["cases"]], REGENERATE
    exact = ("spec", "normalized", "num_params", "n", "params", "x", "targets", "training",
             "masks", "correct")
    close = ("out", "grads", "dx", "predict")
    for old, new in zip(committed["cases"], fresh["cases"]):
        for key in exact:
            assert old[key] == new[key], f"{old['name']}: {key} differs; {REGENERATE}"
        for key in close:
            err = _rel(decode(new[key]), decode(old[key]))
            assert err <= TOLERANCE, f"{old['name']}: {key} off by {err:.2e}; {REGENERATE}"
        assert _rel(np.array([new["loss"]]), np.array([old["loss"]])) <= TOLERANCE, old["name"]
    assert committed["bad_specs"] == fresh["bad_specs"], REGENERATE
    old_a, new_a = committed["add_class"], fresh["add_class"]
    for key in ("spec", "labels", "label", "params", "x", "index_map", "normalized_after",
                "params_after"):
        assert old_a[key] == new_a[key], f"add_class: {key} differs; {REGENERATE}"
    for key in ("predict", "predict_after"):
        assert _rel(decode(new_a[key]), decode(old_a[key])) <= TOLERANCE
    assert len(committed["inner_steps"]) == len(fresh["inner_steps"]), REGENERATE
    for old, new in zip(committed["inner_steps"], fresh["inner_steps"]):
        for key in ("name", "optimizer", "hyperparameters", "spec", "params", "n", "x", "targets"):
            assert old[key] == new[key], f"inner steps {old['name']}: {key} differs; {REGENERATE}"
        for key in ("grads", "params_after"):
            for a, b in zip(old[key], new[key], strict=True):
                assert _rel(decode(b), decode(a)) <= TOLERANCE, f"{old['name']}: {key}; {REGENERATE}"
        assert _rel(np.array(new["loss"]), np.array(old["loss"])) <= TOLERANCE, old["name"]
    assert committed["augmentation"] == fresh["augmentation"], REGENERATE


def test_inner_step_vectors_cover_every_optimizer(committed: dict[str, Any]) -> None:
    from mlitb.optim import OPTIMIZERS

    steps = committed["inner_steps"]
    assert {v["optimizer"] for v in steps} == set(OPTIMIZERS)
    assert all(len(v["params_after"]) == len(v["grads"]) == 2 for v in steps)
    # Two steps move the parameters differently from twice the first: the state counts.
    for v in steps:
        start, one, two = (decode(a) for a in (v["params"], *v["params_after"]))
        assert not np.allclose(two - one, one - start, rtol=1e-3), v["name"]


def test_vectors_agree_with_the_public_api(committed: dict[str, Any]) -> None:
    """The generator's single whole-batch pass equals Net's chunked public calls."""
    for case in committed["cases"]:
        if case["masks"]:  # dropout masks drawn in training mode: not reproducible from outside
            continue
        net = Net(case["spec"], params=decode(case["params"]))
        x = decode(case["x"]).reshape(case["n"], *net.input_shape)
        y = (np.array(case["targets"]) if net.is_classifier
             else decode(case["targets"]).reshape(case["n"], -1))
        stats = net.accumulate_gradient(x, y, training=case["training"], chunk=3)
        assert _rel(decode(case["grads"]), net.grads) <= TOLERANCE, case["name"]
        assert _rel(np.array([case["loss"]]), np.array([stats.loss])) <= TOLERANCE, case["name"]
        assert stats.correct == case["correct"], case["name"]
        assert _rel(decode(case["predict"]), net.predict(x).ravel()) <= TOLERANCE, case["name"]
        if not case["training"]:
            assert _rel(decode(case["out"]), net.forward(x).ravel()) <= TOLERANCE, case["name"]


# -- (b) the JavaScript engine in Chromium ---------------------------------------------------------
@pytest.fixture(scope="module")
def site(browser: Any) -> Iterator[tuple[Any, str]]:
    """Headless Chromium and the base URL of a static server of mlitb/browser/ and the vectors."""
    with serve_static() as base:
        yield browser, base


@pytest.fixture(scope="module")
def page(site: tuple[Any, str]) -> Iterator[Any]:
    browser, base = site
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(base + "/engine/test.html")
    pg.wait_for_function("window.__done === true", timeout=120_000)
    assert pg.evaluate("window.__error") is None, pg.evaluate("window.__error")
    pg.errors = errors
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def results(page: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate("window.__results")
    assert page.errors == []
    return rows


def _failures(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['name']}: {r['errors']} {r.get('message') or ''}"
                     for r in rows if not r["ok"])


def test_every_vector_case_passes_in_the_browser(results: list[dict[str, Any]],
                                                 committed: dict[str, Any]) -> None:
    rows = [r for r in results if "[chunk" in r["name"]]
    # Each case at chunk 8 and chunk 3, with WebAssembly SIMD products (relaxed SIMD's fused
    # multiply-add at chunk 8, separate multiply and add at chunk 3) and in plain JavaScript.
    assert len(rows) == 4 * len(committed["cases"])
    assert sum("simd fma]" in r["name"] for r in rows) == len(committed["cases"])
    assert sum("simd]" in r["name"] for r in rows) == len(committed["cases"])
    assert all(r["ok"] for r in rows), _failures(rows)
    for r in rows:
        assert set(r["errors"]) == {"spec", "num_params", "out", "predict", "loss", "correct",
                                    "grads", "dx", "simd"}
        assert max(r["errors"].values()) <= TOLERANCE


def test_bad_specs_fail_with_pythons_messages(results: list[dict[str, Any]],
                                              committed: dict[str, Any]) -> None:
    rows = [r for r in results if r["name"].startswith("bad spec")]
    assert len(rows) == len(committed["bad_specs"])
    assert all(r["ok"] for r in rows), _failures(rows)


def test_inner_steps_match_mlitb_optim(results: list[dict[str, Any]],
                                       committed: dict[str, Any]) -> None:
    """Each optimizer's two steps, on numpy's gradients and end to end (this engine's gradient,
    in each chunk and SIMD mode), land where mlitb.optim's did."""
    rows = [r for r in results if r["name"].startswith("inner steps:")]
    assert len(rows) == 5 * len(committed["inner_steps"])
    assert all(r["ok"] for r in rows), _failures(rows)
    given = [r for r in rows if r["name"].endswith("(given gradients)")]
    assert all(set(r["errors"]) == {"params after 1", "params after 2", "steps"} for r in given)


def test_augmentation_matches_mlitb_training(results: list[dict[str, Any]],
                                             committed: dict[str, Any]) -> None:
    rows = [r for r in results if r["name"].startswith("augmentation")]
    assert len(rows) == len(committed["augmentation"]) and all(r["ok"] for r in rows), _failures(rows)


def test_augmentation_draws_are_in_range_and_seeded(page: Any) -> None:
    got = _js(page, """
        const draw = (seed) => E.drawAugmentation(new E.Random(seed).random, 4000, {shift: 3, flip: true});
        const a = draw(7), b = draw(7), c = draw(8);
        const same = (p, q) => ['dy', 'dx', 'flip'].every((k) => p[k].every((v, i) => v === q[k][i]));
        const values = new Set([...a.dy, ...a.dx]);
        const none = E.drawAugmentation(Math.random, 5, {shift: 0, flip: false});
        // augment() leaves the batch alone when there is nothing to do, else writes `out`.
        const x = new Float32Array(2 * 3 * 4).fill(1), out = new Float32Array(x.length);
        const untouched = E.augment(x, out, 2, [1, 3, 4], Math.random, {}) === x;
        const moved = E.augment(x, out, 2, [1, 3, 4], new E.Random(1).random, {shift: 2}) === out;
        return {same: same(a, b), differs: !same(a, c), min: Math.min(...values),
                max: Math.max(...values), distinct: values.size,
                flipped: a.flip.reduce((s, v) => s + v, 0) / a.flip.length,
                none: [...none.dy, ...none.dx, ...none.flip].every((v) => v === 0),
                untouched, moved};
    """)
    assert got["same"] and got["differs"] and got["none"] and got["untouched"] and got["moved"]
    assert (got["min"], got["max"], got["distinct"]) == (-3, 3, 7)
    assert 0.45 < got["flipped"] < 0.55


def test_optimizer_refuses_what_python_refuses(page: Any) -> None:
    got = _js(page, """
        const msgs = [];
        for (const f of [() => E.makeOptimizer('rmsprop', 3),
                         () => E.makeOptimizer('adam', 3, {momentum: 0.9}),
                         () => E.makeOptimizer('sgd', 3, {nesterov: 0.5}),
                         () => E.makeOptimizer('nesterov', 3, {nesterov: 0}),
                         () => E.makeOptimizer('sgd', 2).step(new Float32Array(2), [NaN, 0])]) {
          try { f(); msgs.push('no error'); } catch (e) { msgs.push(e.name + ': ' + e.message); }
        }
        const n = E.makeOptimizer('nesterov', 2, {nesterov: 1, lr_decay_every: 2});
        return {msgs, nesterov: n.hp.nesterov && n.name === 'sgd', every: n.hp.lr_decay_every};
    """)
    assert got["msgs"][0].startswith("OptimizerError: name: unknown optimizer 'rmsprop'")
    assert got["msgs"][1].startswith("OptimizerError: momentum: unknown hyperparameter for adam")
    assert got["msgs"][2].startswith("OptimizerError: nesterov: must be 0 (false) or 1 (true)")
    assert got["msgs"][3] == "OptimizerError: nesterov: must be true for the 'nesterov' optimizer"
    assert got["msgs"][4].startswith("OptimizerError: grad: contains NaN")
    assert got["nesterov"] is True and got["every"] == 2


def test_add_class_matches(results: list[dict[str, Any]]) -> None:
    rows = [r for r in results if r["name"] == "add_class"]
    assert len(rows) == 1 and rows[0]["ok"], _failures(rows)


def _js(page: Any, body: str) -> Any:
    """Run an async function body with the engine imported as E."""
    return page.evaluate(f"async () => {{ const E = await import('/engine/index.js'); {body} }}")


def test_gradients_sum_over_calls_and_chunks(page: Any) -> None:
    got = _js(page, """
        const spec = [{type: 'input', out_sx: 6, out_sy: 5, out_depth: 2},
                      {type: 'conv', sx: 3, filters: 4, pad: 1, activation: 'relu'},
                      {type: 'pool', sx: 2}, {type: 'softmax', num_classes: 3}];
        const a = new E.Net(spec, {seed: 1, chunk: 8}), b = new E.Net(spec, {params: a.params, chunk: 2});
        const x = new Float32Array(7 * a.inputSize).map((_, i) => Math.sin(i));
        const y = [0, 1, 2, 0, 1, 2, 0];
        const s1 = a.accumulateGradient(x, y), s2 = a.accumulateGradient(x, y);
        b.accumulateGradient(x, y);
        let worst = 0, scale = 0;
        for (let i = 0; i < a.numParams; i++) {
          worst = Math.max(worst, Math.abs(a.grads[i] - 2 * b.grads[i]));
          scale = Math.max(scale, Math.abs(a.grads[i]));
        }
        const ev = a.evaluate(x, y);
        a.zeroGrads();
        return {rel: worst / scale, same: s1.loss === s2.loss, count: s1.count,
                evalLoss: ev.loss, loss: s1.loss, zero: a.grads.every((g) => g === 0)};
    """)
    assert got["rel"] < 1e-6 and got["same"] and got["count"] == 7 and got["zero"]
    assert abs(got["evalLoss"] - got["loss"]) <= 1e-6 * got["loss"]


def test_decay_multipliers_and_layout_match_python(page: Any) -> None:
    spec = [{"type": "input", "out_sx": 4, "out_sy": 4, "out_depth": 2},
            {"type": "conv", "sx": 3, "filters": 2, "l1_decay_mul": 0.5, "l2_decay_mul": 2.0},
            {"type": "fc", "num_neurons": 3, "activation": "tanh"},
            {"type": "svm", "num_classes": 2}]
    net = Net(spec)
    l1, l2 = net.decay_multipliers()
    got = _js(page, f"""
        const net = new E.Net({json.dumps(spec)});
        const [l1, l2] = net.decayMultipliers();
        return {{n: net.numParams, l1: Array.from(l1), l2: Array.from(l2),
                 shapes: net.layout.map((e) => e.shape)}};
    """)
    assert got["n"] == net.num_params
    assert got["l1"] == l1.tolist() and got["l2"] == l2.tolist()
    assert [tuple(s) for s in got["shapes"]] == [s for _, s in net._layout]


def test_initial_parameters_follow_convnetjs_distribution(page: Any) -> None:
    got = _js(page, """
        const net = new E.Net([{type: 'input', out_sx: 8, out_sy: 8, out_depth: 16},
                               {type: 'conv', sx: 5, filters: 50, activation: 'relu'},
                               {type: 'softmax', num_classes: 2}], {seed: 3});
        const again = new E.Net(net.spec(), {seed: 3});
        const [w, b] = net.layers[1].params;
        let m = 0, v = 0;
        for (const x of w) { m += x; v += x * x; }
        m /= w.length; v = v / w.length - m * m;
        return {std: Math.sqrt(v), mean: m, bias: Array.from(new Set(b)),
                same: net.params.every((p, i) => p === again.params[i])};
    """)
    assert abs(got["std"] - (1 / 400) ** 0.5) < 0.003 and abs(got["mean"]) < 0.003
    assert got["bias"] == [pytest.approx(0.1)] and got["same"]


def test_input_and_target_errors(page: Any) -> None:
    got = _js(page, """
        const net = new E.Net([{type: 'input', out_sx: 2, out_sy: 2, out_depth: 1},
                               {type: 'softmax', num_classes: 3}]);
        const msgs = [];
        for (const f of [() => net.forward(new Float32Array(5)),
                         () => net.accumulateGradient(new Float32Array(8), [0]),
                         () => net.accumulateGradient(new Float32Array(4), [3]),
                         () => net.addClass('0')]) {
          try { f(); msgs.push('no error'); } catch (e) { msgs.push(e.name + ': ' + e.message); }
        }
        return msgs;
    """)
    assert got[0].startswith("RangeError: input must hold whole samples")
    assert got[1].startswith("RangeError: targets must be 2 class indices")
    assert got[2].startswith("RangeError: class indices must lie in [0, 3)")
    assert got[3] == "ModelFormatError: add_class: label '0' exists already"


def test_parameters_written_in_place_take_effect(page: Any) -> None:
    """Rearranged weights are cached between calls; a write into net.params must still count."""
    got = _js(page, """
        const spec = [{type: 'input', out_sx: 4, out_sy: 4, out_depth: 2},
                      {type: 'conv', sx: 3, filters: 4, pad: 1}, {type: 'fc', num_neurons: 3},
                      {type: 'softmax', num_classes: 3}];
        const out = [];
        for (const simd of [true, false]) {
          const a = new E.Net(spec, {seed: 5, simd}), x = new Float32Array(3 * a.inputSize).fill(0.5);
          a.predict(x);
          a.params[7] += 0.25;                                   // a conv weight
          a.params[a.numParams - 20] -= 0.5;                     // an fc weight
          const b = new E.Net(spec, {params: a.params, simd});   // never ran before
          const pa = a.predict(x), pb = b.predict(x);
          out.push(pa.every((v, i) => v === pb[i]));
        }
        return out;
    """)
    assert got == [True, True]


def test_benchmark_measures_the_engine(site: tuple[Any, str]) -> None:
    """mlitb/bench/browser.py's measurement runs (briefly; ConvNetJS only where npm installed it)."""
    from mlitb.bench.browser import CONVNETJS_DIR, measure

    engines = ["mlitb", "mlitb-js"]
    if (CONVNETJS_DIR / "convnet.js").exists():
        engines.append("convnetjs")
    rows, env = measure([2], seconds=0.05, rounds=1, engines=engines, chunk=8, with_numpy=False,
                        browser=site[0], base=site[1])
    assert env["simd"] is True and env["chromium"]
    assert set(rows[0].rates) == set(engines) and all(r > 0 for r in rows[0].rates.values())


def test_engine_trains_in_a_module_web_worker(page: Any) -> None:
    """Browser trainers will run in Web Workers: the engine (and its SIMD kernels) must load and
    train there as on the page, with the same numbers."""
    got = page.evaluate("""async () => {
        const src = `
          import { Net } from '${location.origin}/engine/index.js';
          onmessage = ({ data }) => {
            const net = new Net(data.spec, { seed: 9 });
            const x = new Float32Array(6 * net.inputSize).map((_, i) => Math.cos(i));
            const stats = net.accumulateGradient(x, [0, 1, 2, 0, 1, 2]);
            const grads = net.grads.slice();  // a copy: the live view is of the whole arena
            postMessage({ simd: net.simd, loss: stats.loss, grads }, [grads.buffer]);
          };`;
        const url = URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));
        const worker = new Worker(url, { type: 'module' });
        const spec = [{type: 'input', out_sx: 8, out_sy: 8, out_depth: 3},
                      {type: 'conv', sx: 3, filters: 8, pad: 1, activation: 'relu'},
                      {type: 'pool', sx: 2}, {type: 'softmax', num_classes: 3}];
        const reply = await new Promise((resolve, reject) => {
          worker.onmessage = (e) => resolve(e.data);
          worker.onerror = (e) => reject(new Error(e.message));
          worker.postMessage({ spec });
        });
        worker.terminate();
        const E = await import('/engine/index.js');
        const net = new E.Net(spec, { seed: 9 });
        const x = new Float32Array(6 * net.inputSize).map((_, i) => Math.cos(i));
        const stats = net.accumulateGradient(x, [0, 1, 2, 0, 1, 2]);
        return { simd: reply.simd, same: reply.loss === stats.loss
                 && net.grads.every((g, i) => g === reply.grads[i]) };
    }""")
    assert got == {"simd": True, "same": True}


def test_describe_gives_numpys_shapes_parameters_and_refusals(page: Any) -> None:
    """What the network designer shows as one types (engine/net.js describe): every layer's
    output shape and parameter count as the numpy Net builds them, and, for a spec Python
    refuses, Python's message, without building the net."""
    from mlitb.datasets import CIFAR10_FAST_SPEC, CIFAR10_SPEC, DIGITS_SPEC
    from mlitb.errors import ModelFormatError
    from mlitb.nn._vectors import BAD_SPECS

    specs = [CIFAR10_SPEC, CIFAR10_FAST_SPEC, DIGITS_SPEC, *BAD_SPECS,
             [{"type": "input", "out_sx": 4, "out_sy": 4, "out_depth": 1},
              {"type": "conv", "sx": 9, "filters": 2}, {"type": "softmax", "num_classes": 2}]]
    got = _js(page, f"return {json.dumps(specs)}.map((s) => E.describe(s));")
    for spec, described in zip(specs, got, strict=True):
        try:
            net = Net(spec)
        except ModelFormatError as error:
            assert described["error"] == str(error), spec
            continue
        assert described["error"] is None, spec
        assert [d["outShape"] for d in described["layers"]] == \
            [list(layer.out_shape) for layer in net.layers]
        assert [d["params"] for d in described["layers"]] == \
            [sum(int(np.prod(s)) for s in layer.param_shapes()) for layer in net.layers]
        assert described["numParams"] == net.num_params


def test_optimizer_ranges_are_pythons(page: Any) -> None:
    """The browser's optimizers refuse an out-of-range hyperparameter with mlitb/optim.py's
    message: the designer checks them as they are typed, in the master's words."""
    from mlitb.errors import OptimizerError
    from mlitb.optim import from_wire, make_optimizer

    cases = [("adagrad", {"learning_rate": -1}), ("adagrad", {"lr_decay": 0}),
             ("adagrad", {"lr_decay": 1.5}), ("adam", {"eps": 0}), ("adam", {"beta1": 1}),
             ("adam", {"beta2": -0.5}), ("sgd", {"momentum": 1}), ("adadelta", {"ro": 2}),
             ("adagrad", {"lr_decay_every": 0}), ("adagrad", {"lr_decay_every": 2.5}),
             ("adagrad", {"l2_decay": -0.1}), ("adam", {"learning_rate": 0.001})]
    got = _js(page, f"""
        return {json.dumps(cases)}.map(([name, hp]) => {{
          try {{ E.makeOptimizer(name, 3, hp); return null; }} catch (e) {{ return e.message; }}
        }});""")
    for (name, hp), message in zip(cases, got, strict=True):
        try:
            make_optimizer(name, 3, **from_wire(hp))
            expected = None
        except OptimizerError as error:
            expected = str(error)
        assert message == expected, (name, hp)
