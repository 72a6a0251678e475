"""Research closures: round trips, bit-exact resume, and a clear error for every kind of damage."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.closure import (
    DataManifest,
    SplitManifest,
    canonical_json,
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
    load_closure,
    manifest_from_store,
    manifest_from_zip,
    match_manifest,
    save_closure,
    schema,
    split_from_zip,
    verify_manifest,
)
from mlitb.closure._schema import validate
from mlitb.datasets import DIGITS_SPEC, digits, to_input
from mlitb.errors import ClosureError
from mlitb.nn import Net, model_from_dict
from mlitb.optim import OPTIMIZERS, make_optimizer
from mlitb.protocol import HistoryPoint, StatsPoint
from mlitb.training import Project

SMALL = [{"type": "input", "out_sx": 3, "out_sy": 2, "out_depth": 2},
         {"type": "fc", "num_neurons": 5, "activation": "tanh"},
         {"type": "softmax", "num_classes": 3}]


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def make_project(spec=SMALL, optimizer="adagrad", steps=3, seed=0, labels=None, **hp) -> Project:
    net = Net(spec, seed=seed, labels=labels)
    l1, l2 = net.decay_multipliers()
    opt = make_optimizer(optimizer, net.num_params, l1_mul=l1, l2_mul=l2, **hp)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step(net.params, rng.standard_normal(net.num_params).astype(np.float32))
    project = Project("demo", net, opt, optimizer, 2.0)
    project.iteration = steps + 1
    project.parameter_version = steps
    for i in range(steps):
        project.history.append(HistoryPoint(iteration=i, samples=10 * (i + 1), loss=1.0 / (i + 1),
                                            accuracy=0.25 * (i % 4)))
    project.test_error.append(StatsPoint(iteration=steps, parameter_version=steps, samples=7,
                                         error=0.5))
    return project


MANIFEST = DataManifest(
    ("0", "1", "2"),
    SplitManifest(tuple(hashlib.sha256(bytes([i])).hexdigest() for i in range(5)),
                  ("0", "1", "2", "0", "1")),
    SplitManifest((hashlib.sha256(b"t").hexdigest(),), ("2",)))


@pytest.fixture
def closure_dict() -> dict:
    return closure_to_dict(closure_from_project(make_project(), MANIFEST, seeds={"init": 0}))


def reseal(d: dict) -> dict:
    """Recompute content_sha256 after an edit (as a careful forger would)."""
    body = {k: v for k, v in d.items() if k != "content_sha256"}
    d["content_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return d


def error_of(d: dict) -> str:
    with pytest.raises(ClosureError) as info:
        closure_from_dict(json.loads(json.dumps(d)))
    return str(info.value)


# -- round trips ----------------------------------------------------------------------------------
def test_save_load_identical_predictions_parameters_and_state(tmp_path):
    _, test, names = digits()
    project = make_project(DIGITS_SPEC, "adam", steps=4, labels=names, learning_rate=0.01)
    path = save_closure(closure_from_project(project), tmp_path / "run.closure.json")
    closure = load_closure(path)
    net = closure.net()
    x = to_input(test.images)
    assert bits(net.predict(x)) == bits(project.net.predict(x))
    assert bits(net.params) == bits(project.net.params)
    assert net.labels == names and net.spec() == project.net.spec()
    opt = closure.optimizer()
    for key, value in project.optimizer.state().items():
        restored = opt.state()[key]
        assert (bits(restored) == bits(value)) if isinstance(value, np.ndarray) \
            else restored == value
    assert opt.hyperparameters() == project.optimizer.hyperparameters()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_is_bit_identical(tmp_path, name):
    """Two runs continue from the same point, one live and one from the closure file."""
    project = make_project(DIGITS_SPEC, name, steps=5, l2_decay=1e-3, lr_decay=0.9,
                           learning_rate=0.02)
    path = save_closure(closure_from_project(project), tmp_path / "c.json")
    closure = load_closure(path)
    net, opt = closure.net(), closure.optimizer()
    live_params, live_opt = project.net.params, project.optimizer
    rng = np.random.default_rng(42)
    for _ in range(6):
        grad = rng.standard_normal(net.num_params).astype(np.float32)
        live_opt.step(live_params, grad)
        opt.step(net.params, grad)
    assert bits(net.params) == bits(live_params)
    assert opt.learning_rate == live_opt.learning_rate and opt.step_count == live_opt.step_count


def test_custom_decay_multipliers_are_kept():
    net = Net(SMALL, seed=1)
    l1 = np.linspace(0, 2, net.num_params).astype(np.float32)
    opt = make_optimizer("sgd", net.num_params, l1_decay=0.1, l1_mul=l1)
    closure = closure_from_project(Project("p", net, opt, "sgd", 3.0))
    d = closure_to_dict(closure)
    assert "decay_multipliers" in d["optimizer"]
    restored = closure_from_dict(d).optimizer()
    assert bits(restored.l1_mul) == bits(l1) and bits(restored.l2_mul) == bits(opt.l2_mul)
    # the usual case writes none
    assert "decay_multipliers" not in closure_to_dict(closure_from_project(make_project()))[
        "optimizer"]


def test_dict_round_trip_and_schema(closure_dict):
    validate(closure_dict)
    again = closure_to_dict(closure_from_dict(json.loads(json.dumps(closure_dict))))
    assert again == closure_dict


def test_loop_settings_seeds_and_times():
    project = make_project()
    project.samples_per_iteration = 64
    first = closure_from_project(project, seeds={"init": 7, "data": 2**53 - 1})
    later = closure_from_project(project, created=first.created)
    assert later.created == first.created and later.updated >= first.updated
    d = closure_to_dict(first)
    assert d["loop"]["budget"]["policy"] == "samples" and d["loop"]["deterministic"] is True
    assert d["loop"]["seeds"] == {"init": 7, "data": 2**53 - 1}
    assert d["created"].endswith("Z") and d["software"]["name"] == "mlitb"
    assert closure_from_dict(d).loop == first.loop


def test_closure_of_a_grown_net_and_regression_net():
    project = make_project(labels=["a", "b", "c"])
    project.labels_registered = True
    project.register_labels(["a", "b", "c", "d"])
    closure = closure_from_dict(closure_to_dict(closure_from_project(project)))
    assert closure.labels == ("a", "b", "c", "d")
    assert closure.optimizer().num_params == closure.net().num_params
    regression = [{"type": "input", "out_sx": 1, "out_sy": 1, "out_depth": 3},
                  {"type": "regression", "num_neurons": 2}]
    closure = closure_from_dict(closure_to_dict(closure_from_project(
        make_project(regression, "adadelta"))))
    assert closure.labels == () and closure.net().num_outputs == 2
    assert closure.history[0].accuracy == 0.0


def test_closure_is_a_snapshot():
    project = make_project()
    closure = closure_from_project(project)
    before = bits(closure.parameters)
    project.optimizer.step(project.net.params, np.ones(project.net.num_params, np.float32))
    assert bits(closure.parameters) == before
    with pytest.raises(ValueError):
        closure.parameters[0] = 1.0  # read-only
    net = closure.net()
    net.params[0] += 1
    assert bits(closure.parameters) == before


def test_model_dict_is_our_model_format():
    closure = closure_from_project(make_project())
    net = model_from_dict(closure.model_dict())
    assert bits(net.params) == bits(closure.parameters)


# -- damage, each with a clear error --------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.97])
def test_truncated_file(tmp_path, keep):
    path = save_closure(closure_from_project(make_project(DIGITS_SPEC)), tmp_path / "c.json")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ClosureError, match="truncated") as info:
        load_closure(path)
    assert str(path) in str(info.value)


def test_empty_and_non_json_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("")
    with pytest.raises(ClosureError, match="empty"):
        load_closure(path)
    path.write_text("{]")
    with pytest.raises(ClosureError, match="not valid JSON"):
        load_closure(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ClosureError, match="not UTF-8"):
        load_closure(path)


def flip_parameter_byte(d: dict, index: int = 5) -> None:
    raw = bytearray(base64.b64decode(d["model"]["parameters"]))
    raw[index] ^= 0x01
    d["model"]["parameters"] = base64.b64encode(bytes(raw)).decode("ascii")


def test_tampered_parameter_byte(tmp_path, closure_dict):
    flip_parameter_byte(closure_dict)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(closure_dict))
    with pytest.raises(ClosureError) as info:
        load_closure(path)
    message = str(info.value)
    assert "model.parameters" in message and "does not match model.sha256" in message


def test_tampered_parameter_byte_with_its_hash_updated(closure_dict):
    flip_parameter_byte(closure_dict)
    raw = base64.b64decode(closure_dict["model"]["parameters"])
    closure_dict["model"]["sha256"] = hashlib.sha256(raw).hexdigest()
    assert "content_sha256: does not match" in error_of(closure_dict)


def test_wrong_version(closure_dict):
    closure_dict["version"] = 2
    assert error_of(closure_dict) == "format version 2 is not supported (this mlitb reads 1)"


@pytest.mark.parametrize("path", [
    ("model",), ("optimizer", "step"), ("model", "sha256"), ("loop", "seeds"), ("data", "train"),
    ("history", "test_error"), ("created",), ("software", "version"), ("labels",),
])
def test_missing_field(closure_dict, path):
    target = closure_dict
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    assert error_of(closure_dict) == f"{'.'.join(path)}: required field is missing"


def nan_into(d: dict, where: tuple[str, ...], key: str = "parameters", sha: str = "sha256"):
    target = d
    for k in where:
        target = target[k]
    values = np.frombuffer(base64.b64decode(target[key]), "<f4").copy()
    values[3] = np.nan
    raw = values.tobytes()
    target[key] = base64.b64encode(raw).decode("ascii")
    target[sha] = hashlib.sha256(raw).hexdigest()


def test_nan_parameter(closure_dict):
    nan_into(closure_dict, ("model",))
    message = error_of(reseal(closure_dict))
    assert message.startswith("model.parameters:") and "NaN" in message and "index 3" in message


def test_nan_in_optimizer_state(closure_dict):
    nan_into(closure_dict, ("optimizer", "state", "grad_sq_sum"), "data")
    message = error_of(reseal(closure_dict))
    assert message.startswith("optimizer.state.grad_sq_sum.data:") and "NaN" in message


def test_writing_refuses_nan():
    project = make_project()
    project.net.params[2] = np.inf
    with pytest.raises(ClosureError, match="model.parameters: 1 value"):
        closure_to_dict(closure_from_project(project))


def _set(d, path, value):
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value


def _b64(values) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode("ascii")


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: _set(d, ("format",), "mlitb-model"), "mlitb model file, not a research closure"),
    (lambda d: d.pop("format"), "field 'format' is missing"),
    (lambda d: _set(d, ("version",), "1"), "version: must be an integer"),
    (lambda d: _set(d, ("surprise",), 1), "surprise: unknown field"),
    (lambda d: _set(d, ("iteration",), -1), "iteration: must be >= 0, got -1"),
    (lambda d: _set(d, ("iteration",), 1.5), "iteration: must be an integer, got 1.5"),
    (lambda d: _set(d, ("name",), "no spaces"), "name: must match"),
    (lambda d: _set(d, ("created",), "yesterday"), "created: must match"),
    (lambda d: _set(d, ("created",), "2999-01-01T00:00:00Z"), "updated: "),
    (lambda d: _set(d, ("model", "sha256"), "ABC"), "model.sha256: must match ^[0-9a-f]{64}$"),
    (lambda d: _set(d, ("model", "parameters"), "abc"), "model.parameters: must match"),
    (lambda d: _set(d, ("model", "num_params"), 3),
     "model.parameters: holds 332 bytes, but 3 float32 values need 12"),
    (lambda d: _set(d, ("model", "layers"), [{"type": "input"}, {"type": "nope"}]), "model: "),
    (lambda d: _set(d, ("labels",), ["x", "y", "z"]), "labels: ['x', 'y', 'z'] differ from model"),
    (lambda d: _set(d, ("optimizer", "name"), "rmsprop"), "optimizer.name: must be one of"),
    (lambda d: _set(d, ("optimizer", "hyperparameters", "learning_rate"), -1.0),
     "optimizer.hyperparameters: learning_rate: must be finite and in [0, inf)"),
    (lambda d: _set(d, ("optimizer", "hyperparameters", "beta1"), 0.9),
     "optimizer.hyperparameters: beta1: unknown hyperparameter for adagrad"),
    (lambda d: d["optimizer"]["hyperparameters"].pop("eps"),
     "optimizer.hyperparameters.eps: is missing"),
    (lambda d: d["optimizer"]["state"].pop("grad_sq_sum"),
     "optimizer.state.grad_sq_sum: is missing (adagrad keeps grad_sq_sum)"),
    (lambda d: _set(d, ("optimizer", "state", "velocity"), d["optimizer"]["state"]["grad_sq_sum"]),
     "optimizer.state.velocity: unknown for adagrad"),
    (lambda d: _set(d, ("optimizer", "state", "grad_sq_sum"),
                    {"data": _b64([1, 2]), "sha256": hashlib.sha256(
                        np.asarray([1, 2], "<f4").tobytes()).hexdigest()}),
     "optimizer.state.grad_sq_sum.data: holds 8 bytes, but 83 float32 values need 332"),
    (lambda d: _set(d, ("optimizer", "state", "grad_sq_sum", "sha256"), "0" * 64),
     ("optimizer.state.grad_sq_sum.data: SHA-256 of the bytes does not match "
      "optimizer.state.grad_sq_sum.sha256")),
    (lambda d: _set(d, ("loop", "samples_per_iteration"), 10),
     "loop.budget.policy: is 'latency', but loop.samples_per_iteration is 10"),
    (lambda d: _set(d, ("loop", "deterministic"), True), "loop.deterministic: "),
    (lambda d: _set(d, ("loop", "iteration_time"), 0), "loop.iteration_time: must be > 0"),
    (lambda d: _set(d, ("loop", "budget", "config", "smoothing"), 2.0),
     "loop.budget.config: budget config: smoothing=2.0 is out of range"),
    (lambda d: _set(d, ("loop", "budget", "config", "bogus"), 2.0),
     "loop.budget.config.bogus: unknown budget setting"),
    (lambda d: _set(d, ("loop", "seeds", "init"), 2**53), "loop.seeds.init: must be <="),
    (lambda d: _set(d, ("parameter_version",), 99), "parameter_version: 99 steps in 4 iterations"),
    (lambda d: _set(d, ("data", "labels"), ["0", "0", "2"]), "data.labels: label names must be"),
    (lambda d: _set(d, ("data", "train", "count"), 4), "data.train: count is 4, but sha256 holds 5"),
    (lambda d: _set(d, ("data", "train", "label", 2), 3),
     "data.train.label[2]: 3 is not an index into data.labels (3 labels)"),
    (lambda d: _set(d, ("data", "train", "counts", "0"), 1),
     "data.train.counts: says 1 sample(s) labelled '0', but the samples hold 2"),
    (lambda d: _set(d, ("data", "test", "sha256", 0), "f" * 64),
     "data.test.digest: does not match the samples"),
    (lambda d: _set(d, ("data", "test", "sha256", 0), "F" * 64),
     "data.test.sha256[0]: must match ^[0-9a-f]{64}$"),
    (lambda d: _set(d, ("history", "train", 0, "accuracy"), 1.5),
     "history.train[0].accuracy: must be <= 1, got 1.5"),
    (lambda d: _set(d, ("history", "test_error", 0, "samples"), 0),
     "history.test_error[0].samples: must be >= 1"),
    (lambda d: _set(d, ("content_sha256",), "0" * 64), "content_sha256: does not match"),
])
def test_every_damage_is_named(closure_dict, edit, expected):
    edit(closure_dict)
    if expected != "content_sha256: does not match":
        closure_dict.pop("content_sha256", None)  # each field's own check, not the seal
    assert expected in error_of(closure_dict)


def test_content_hash_is_optional_and_checked_last(closure_dict):
    closure_dict.pop("content_sha256")
    closure = closure_from_dict(closure_dict)
    assert closure_to_dict(closure)["content_sha256"]  # written again on saving


def test_strict_json(tmp_path, closure_dict):
    text = json.dumps(closure_dict)
    path = tmp_path / "c.json"
    path.write_text(text.replace('"version": 1,', '"version": 1, "version": 1,'))
    with pytest.raises(ClosureError, match="'version' appears twice"):
        load_closure(path)
    path.write_text(text.replace('"loss": 1.0', '"loss": NaN'))
    with pytest.raises(ClosureError, match="NaN is not a JSON number"):
        load_closure(path)
    with pytest.raises(ClosureError, match="must be a JSON object"):
        closure_from_dict([1])
    with pytest.raises(ClosureError, match="ConvNetJS"):
        closure_from_dict({"layers": []})


# -- canonical JSON and the schema ----------------------------------------------------------------
@pytest.mark.parametrize(("value", "text"), [
    (1e21, "1e+21"), (1e-7, "1e-7"), (123e-20, "1.23e-18"), (0.000001, "0.000001"),
    (333333333.33333329, "333333333.3333333"), (4.5, "4.5"), (2e-3, "0.002"), (1e-8, "1e-8"),
    (2.0, "2"), (-0.0, "0"), (1e20, "100000000000000000000"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (-1.5, "-1.5"), (0.1, "0.1"),
])
def test_canonical_numbers_follow_ecmascript(value, text):
    assert canonical_json(value) == text.encode()


def test_canonical_objects_strings_and_limits():
    # RFC 8785 sorts keys by UTF-16 code units: U+1F600 (D83D DE00) comes before U+FB33
    assert canonical_json({"\ufb33": 1, "\U0001f600": 2, "b": [True, None], "a": "\n\u00e9\x01"}) \
        == '{"a":"\\n\u00e9\\u0001","b":[true,null],"\U0001f600":2,"\ufb33":1}'.encode()
    with pytest.raises(ClosureError, match="too large"):
        canonical_json(2**53)
    with pytest.raises(ClosureError):
        canonical_json(math.nan)


def test_schema_matches_the_code():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["properties"]["optimizer"]["properties"]["name"]["enum"] == list(OPTIMIZERS)
    optional = {"content_sha256", "replay"}  # replay: deterministic runs only
    assert set(s["required"]) | optional == set(s["properties"])
    assert set(closure_to_dict(closure_from_project(make_project()))) == \
        set(s["properties"]) - {"replay"}


def test_schema_is_valid_draft_2020_12_with_no_unknown_keywords():
    """Any validator checks a closure against the shipped schema; a keyword no vocabulary defines
    (a misspelt ``"minimun"``) would be ignored by every one of them, so none may be there."""
    from jsonschema import Draft202012Validator

    s = schema()
    Draft202012Validator.check_schema(s)
    known = set(Draft202012Validator.VALIDATORS) | {
        "$schema", "$id", "$defs", "$comment", "title", "description", "format", "examples",
        "default", "deprecated", "readOnly", "writeOnly"}
    seen: set[str] = set()

    def walk(sub):
        if isinstance(sub, dict):
            seen.update(sub)
            for key, value in sub.items():
                if key in ("properties", "$defs", "patternProperties"):
                    for item in value.values():
                        walk(item)
                elif isinstance(value, (dict, list)) and key not in ("const", "enum", "examples",
                                                                    "default", "required"):
                    walk(value)
        elif isinstance(sub, list):
            for item in sub:
                walk(item)

    walk(s)
    assert seen - known == set()


def test_schema_validator_semantics():
    sch = {"type": "object", "properties": {
        "n": {"type": "integer"}, "s": {"type": "string", "pattern": "^a+$"},
        "b": {"type": "number"}, "x": {"type": ["integer", "null"], "minimum": 1}}}
    validate({"n": 1.0, "s": "aa", "b": 2, "x": None}, sch)  # 1.0 is an integer in JSON Schema
    for bad, message in [({"n": True}, "n: must be an integer, got true"),
                         ({"s": "aa\n"}, "s: must match"),  # ECMA-262's $: no final newline
                         ({"s": 1.5, "n": "1"}, "s: must be a string, got 1.5"),
                         ({"b": math.nan}, "b: must be a finite number, got nan"),
                         ({"b": math.inf}, "b: must be a finite number"),
                         ({"x": 0}, "x: must be >= 1")]:
        with pytest.raises(ClosureError, match=message.replace("(", r"\(")):
            validate(bad, sch)


# -- data manifests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_zips(tmp_path_factory):
    from mlitb.dataserver import write_archive

    train, test, names = digits()
    root = tmp_path_factory.mktemp("zips")
    pick = slice(0, 60)
    train_zip = write_archive(root / "train.zip", ((names[k], img[..., 0]) for img, k in
                                                   zip(train.images[pick], train.labels[pick])))
    test_zip = write_archive(root / "test.zip", ((names[k], img[..., 0]) for img, k in
                                                 zip(test.images[:20], test.labels[:20])),
                             wrapper="digits")
    return train_zip, test_zip


def test_manifest_from_zip_hashes_as_the_data_server(digit_zips, tmp_path):
    from mlitb.dataserver import InputShape, Store, decode_archive

    train_zip, test_zip = digit_zips
    shape = InputShape(8, 8, 1)
    decoded = decode_archive(train_zip, shape)
    split = split_from_zip(train_zip)
    assert sorted(zip(split.sha256, split.labels)) == sorted(
        zip(decoded.sha256, (decoded.label_names[k] for k in decoded.labels)))
    store = Store(tmp_path / "store")
    store.add("digits", decoded, "train")
    store.add("digits", decode_archive(test_zip, shape), "test")
    from_store = manifest_from_store(store.manifest("digits"))
    assert from_store.train.digest() == manifest_from_zip(train_zip).train.digest()
    assert from_store.test.digest() == manifest_from_zip(test_zip, "test").test.digest()
    # and into a closure, through the project snapshot
    closure = closure_from_project(make_project(DIGITS_SPEC), store.manifest("digits"))
    closure = closure_from_dict(closure_to_dict(closure))
    assert verify_manifest(closure, train_zip).split == "train"
    assert verify_manifest(closure, test_zip).split == "test"
    assert verify_manifest(closure, test_zip, "test").count == 20


def test_manifest_differences_are_named(digit_zips, tmp_path):
    from mlitb.dataserver import write_archive

    train_zip, test_zip = digit_zips
    manifest = manifest_from_zip(train_zip)
    with pytest.raises(ClosureError, match="do not match the training data"):
        match_manifest(manifest, split_from_zip(test_zip))
    train, _, names = digits()
    relabelled = [(names[(k + (i == 0)) % 10], img[..., 0]) for i, (img, k) in
                  enumerate(zip(train.images[:60], train.labels[:60]))]
    odd = write_archive(tmp_path / "odd.zip", relabelled[:-1])  # one relabelled, one missing
    with pytest.raises(ClosureError) as info:
        match_manifest(manifest, split_from_zip(odd))
    message = str(info.value)
    assert "1 image(s) carry another label" in message
    assert "1 image(s) of the manifest are not in the zip" in message
    with pytest.raises(ClosureError, match="not in the manifest"):
        match_manifest(manifest, split_from_zip(test_zip) + manifest.train, "train")
    both = DataManifest(manifest.labels, manifest.train, split_from_zip(test_zip))
    assert match_manifest(both, manifest.train + split_from_zip(test_zip)).split == "all"
    no_data = closure_from_project(make_project())
    with pytest.raises(ClosureError, match="no data manifest"):
        verify_manifest(no_data, train_zip)


def test_manifest_of_a_bad_zip(tmp_path):
    from mlitb.errors import UploadError

    path = tmp_path / "x.zip"
    path.write_bytes(b"PK not really")
    with pytest.raises((ClosureError, UploadError), match="zip"):
        split_from_zip(path)


# -- property: any small net and optimizer survives the trip ---------------------------------------
@st.composite
def projects(draw):
    depth, sy, sx = (draw(st.integers(1, 3)) for _ in range(3))
    spec = [{"type": "input", "out_sx": sx, "out_sy": sy, "out_depth": depth}]
    if draw(st.booleans()):
        spec.append({"type": "conv", "sx": draw(st.sampled_from([1, 3])), "filters":
                     draw(st.integers(1, 3)), "pad": 1, "activation": "relu"})
    for _ in range(draw(st.integers(0, 2))):
        spec.append({"type": "fc", "num_neurons": draw(st.integers(1, 4)),
                     "activation": draw(st.sampled_from(["relu", "tanh", "sigmoid"]))})
    kind = draw(st.sampled_from(["softmax", "svm", "regression"]))
    k = draw(st.integers(2, 4))
    spec.append({"type": kind, "num_classes": k} if kind != "regression"
                else {"type": kind, "num_neurons": k})
    name = draw(st.sampled_from(OPTIMIZERS))
    lr = draw(st.floats(1e-4, 0.5))
    project = make_project(spec, name, steps=draw(st.integers(0, 4)),
                           seed=draw(st.integers(0, 2**32 - 1)), learning_rate=lr,
                           l2_decay=draw(st.sampled_from([0.0, 1e-3])))
    project.samples_per_iteration = draw(st.none() | st.integers(1, 10_000))
    return project


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(projects(), st.integers(0, 2**32))
def test_round_trip_property(project, grad_seed):
    d = closure_to_dict(closure_from_project(project))
    text = json.dumps(d)
    closure = closure_from_dict(json.loads(text))
    assert closure_to_dict(closure) == d
    assert closure.content_sha256() == d["content_sha256"]
    net, opt = closure.net(), closure.optimizer()
    live = copy.deepcopy(project.optimizer)
    live_params = project.net.params.copy()
    rng = np.random.default_rng(grad_seed)
    for _ in range(2):
        grad = rng.standard_normal(net.num_params).astype(np.float32)
        live.step(live_params, grad)
        opt.step(net.params, grad)
    assert bits(net.params) == bits(live_params)


def test_load_closure_passes_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_closure(tmp_path / "missing.json")



JCS_JS = r"""
const fs = require('fs'), crypto = require('crypto');
// RFC 8785 in a few lines: JSON.stringify writes numbers and strings as JCS wants, and the
// default sort compares UTF-16 code units.
const canon = v => (v === null || typeof v !== 'object') ? JSON.stringify(v)
  : Array.isArray(v) ? '[' + v.map(canon).join(',') + ']'
  : '{' + Object.keys(v).sort().map(k => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
const d = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const stated = d.content_sha256;
delete d.content_sha256;
const digest = crypto.createHash('sha256').update(canon(d), 'utf8').digest('hex');
console.log(JSON.stringify({stated, digest}));
"""


def test_content_hash_recomputed_by_javascript(tmp_path):
    """Another language recomputes content_sha256 with its own canonical JSON."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    project = make_project(DIGITS_SPEC, "adam", labels=["zero", "é", "\U0001f600", "\ufb33", "a b",
                                                        "5", "6", "7", "8", "9"],
                           learning_rate=1e-7, eps=1e-8)
    project.history.append(HistoryPoint(iteration=9, samples=3, loss=1e21, accuracy=1 / 3))
    manifest = DataManifest(("\U0001f600", "\ufb33"), SplitManifest(("a" * 64,), ("\ufb33",)))
    path = save_closure(closure_from_project(project, manifest, seeds={"x": 2**53 - 1}),
                        tmp_path / "c.json")
    script = tmp_path / "jcs.js"
    script.write_text(JCS_JS)
    done = subprocess.run([node, str(script), str(path)], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result["digest"] == result["stated"]


def test_schema_fast_path_for_long_lists_reports_like_the_slow_one():
    sch = {"$defs": {"hex": {"type": "string", "pattern": "^[0-9a-f]+$"},
                     "short": {"$ref": "#/$defs/hex", "maxLength": 4}},
           "type": "array", "items": {"$ref": "#/$defs/short", "minLength": 2}}
    validate(["ab", "abcd", "ff"], sch)
    for bad, message in [(["ab", "abcde"], r"\[1\]: holds at most 4 characters"),
                         (["ab", "a"], r"\[1\]: needs at least 2 characters"),
                         (["ab", "zz"], r"\[1\]: must match"),
                         (["ab", 12], r"\[1\]: must be a string")]:
        with pytest.raises(ClosureError, match=message):
            validate(bad, sch)
    ints = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}}
    validate([0, 3, 2.0], ints)  # 2.0 takes the exact path and is an integer
    with pytest.raises(ClosureError, match=r"\[2\]: must be <= 3, got 4"):
        validate([0, 1, 4], ints)
    with pytest.raises(ClosureError, match=r"\[0\]: must be an integer, got true"):
        validate([True], ints)
    pairs = {"type": "array", "items": {"type": "object", "required": ["p"], "properties": {
        "p": {"type": "array", "minItems": 1, "items": {
            "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}}}}}}
    validate([{"p": [[0, 1], [2, 3]]}, {"p": [[4, 5]]}], pairs)
    for bad, message in [([{"p": [[0, 1]]}, {"p": [[0, 1, 2]]}], r"^\[1\].p\[0\]: holds at most 2"),
                         ([{"p": [[0]]}], r"^\[0\].p\[0\]: needs at least 2 items, got 1"),
                         ([{"p": []}], r"^\[0\].p: needs at least 1 items, got 0"),
                         ([{"p": [[0, 1.5]]}], r"^\[0\].p\[0\]\[1\]: must be an integer"),
                         ([{"p": [(0, 1)]}, {}], r"^\[1\].p: required field is missing")]:
        with pytest.raises(ClosureError, match=message):
            validate(bad, pairs)


def test_the_first_error_in_document_order_is_reported(closure_dict):
    closure_dict.pop("content_sha256")
    closure_dict["data"]["train"]["sha256"][3] = "xyz"
    closure_dict["data"]["train"]["sha256"][1] = "F" * 64
    closure_dict["history"]["train"][0]["accuracy"] = 2.0
    assert error_of(closure_dict).startswith(
        "data.train.sha256[1]: must match ^[0-9a-f]{64}$, got 'FFFFFFFFFFFFFFFF")
    closure_dict["data"]["train"]["surprise"] = 1  # after sha256 in the file: still [1]
    assert error_of(closure_dict).startswith("data.train.sha256[1]: must match")
    del closure_dict["data"]["train"]["count"]
    assert error_of(closure_dict) == "data.train.count: required field is missing"
    closure_dict["name"] = "a name\n"  # before data
    assert error_of(closure_dict) == r"name: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$, got " \
        "'a name\\n'"


_LEAVES = [{"type": "string", "pattern": "^[0-9a-f]{2}$"},
           {"type": "integer", "minimum": 0, "maximum": 9},
           {"$ref": "#/$defs/hex", "minLength": 1, "maxLength": 3},
           {"$ref": "#/$defs/small", "minimum": 1},
           {"type": ["number", "null"], "minimum": 0, "maximum": 1},
           {"type": "object", "required": ["a"], "additionalProperties": False,
            "properties": {"a": {"$ref": "#/$defs/small"},
                           "b": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}},
           {"type": "object", "properties": {"b": {"type": "boolean"}}},
           {"type": "object", "required": ["p"], "properties": {"p": {
               "type": "array", "minItems": 1, "items": {
                   "type": "array", "minItems": 2, "maxItems": 2,
                   "items": {"$ref": "#/$defs/small"}}}}}]
_DEFS = {"hex": {"type": "string", "pattern": "^[0-9a-f]+$"},
         "small": {"type": "integer", "maximum": 5}}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_LEAVES), st.lists(st.recursive(st.one_of(
    st.integers(-2, 11), st.floats(-2, 11), st.floats(), st.booleans(), st.none(),
    st.text("0123456789abcdefxF\n", max_size=4)),
    lambda inner: st.dictionaries(st.sampled_from("abcp"), inner, max_size=3) |
    st.lists(inner, max_size=3), max_leaves=6), max_size=8))
def test_the_long_list_shortcut_agrees_with_the_library_item_by_item(leaf, values):
    """The shortcut for lists (one tight loop) must never pass what the library refuses, and a
    refused list names the same item and problem as that item checked on its own."""
    def outcome(value, sch):
        try:
            validate(value, {"$defs": _DEFS, **sch})
        except ClosureError as exc:
            return str(exc)
        return None

    alone = [outcome({"x": v}, {"type": "object", "properties": {"x": leaf}}) for v in values]
    first = next(((i, m) for i, m in enumerate(alone) if m is not None), None)
    whole = outcome(values, {"type": "array", "items": leaf})
    assert whole == (None if first is None else f"[{first[0]}]" + first[1][1:])
