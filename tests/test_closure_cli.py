"""``mlitb closure inspect / verify / predict / export`` through typer's CliRunner."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from mlitb.cli._closure import closure_app
from mlitb.closure import closure_from_project, load_closure, manifest_from_zip, save_closure
from mlitb.datasets import DIGITS_SPEC, digits, to_input
from mlitb.nn import Net, from_convnetjs, load_model
from mlitb.optim import make_optimizer
from mlitb.protocol import HistoryPoint, StatsPoint
from mlitb.training import Project

runner = CliRunner()
app = typer.Typer()
app.add_typer(closure_app, name="closure")  # as mlitb/cli/__init__.py registers it


def invoke(*args: str):
    return runner.invoke(app, ["closure", *map(str, args)], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits net trained for a few epochs, its closure (with a manifest) and some PNGs."""
    from mlitb.dataserver import write_archive

    train, test, names = digits()
    net = Net(DIGITS_SPEC, seed=0, labels=names)
    l1, l2 = net.decay_multipliers()
    opt = make_optimizer("adam", net.num_params, learning_rate=0.01, l1_mul=l1, l2_mul=l2)
    x, y = to_input(train.images), train.labels
    rng = np.random.default_rng(0)
    project = Project("digits", net, opt, "adam", 2.0)
    for epoch in range(4):
        perm = rng.permutation(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            net.zero_grads()
            stats = net.accumulate_gradient(x[idx], y[idx])
            opt.step(net.params, net.grads / len(idx))
            project.history.append(HistoryPoint(iteration=project.iteration, samples=len(idx),
                                                loss=stats.loss / len(idx),
                                                accuracy=stats.correct / len(idx)))
            project.iteration += 1
            project.parameter_version += 1
    error = 1 - float((net.predict(to_input(test.images)).argmax(1) == test.labels).mean())
    project.test_error.append(StatsPoint(iteration=project.iteration - 1,
                                         parameter_version=project.parameter_version,
                                         samples=len(test.labels), error=error))
    root = tmp_path_factory.mktemp("closure_cli")
    train_zip = write_archive(root / "train.zip", ((names[k], img[..., 0]) for img, k in
                                                   zip(train.images, train.labels)))
    path = save_closure(closure_from_project(project, manifest_from_zip(train_zip),
                                             seeds={"init": 0}), root / "digits.closure.json")
    pngs = []
    for i in range(12):
        png = root / f"digit{i}.png"
        Image.fromarray(test.images[i][..., 0]).save(png)
        pngs.append(png)
    return {"path": path, "project": project, "pngs": pngs, "labels": test.labels[:12],
            "names": names, "train_zip": train_zip, "test": test, "n_train": len(y)}


def test_inspect(trained):
    result = invoke("inspect", trained["path"])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("digits", "mlitb-closure 1", "4,538 parameters", "adam", "learning_rate=0.01",
                 "input 1×8×8", "T=2 s", "data: train", f"{trained['n_train']:,} samples", "test error", "conv",
                 "softmax", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9", "seeds: init=0"):
        assert text in out, text


def test_inspect_json(trained):
    result = invoke("inspect", trained["path"], "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    project = trained["project"]
    assert s["model"]["num_params"] == project.net.num_params
    assert s["iteration"] == project.iteration and s["optimizer"]["name"] == "adam"
    assert s["history"]["last"]["loss"] == project.history[-1].loss
    assert s["data"]["train"]["count"] == trained["n_train"] and s["data"]["test"]["count"] == 0
    assert s["labels"] == trained["names"]


def test_verify_ok_and_with_data(trained):
    result = invoke("verify", trained["path"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK ") and "content sha256" in result.output
    result = invoke("verify", trained["path"], "--data", trained["train_zip"])
    assert result.exit_code == 0, result.output
    assert f"{trained['n_train']:,} images match the manifest's training data" in result.output
    result = invoke("verify", trained["path"], "--data", trained["train_zip"], "--split", "test")
    assert result.exit_code == 1
    assert "do not match the test data" in result.output


def test_verify_failures(trained, tmp_path):
    d = json.loads(trained["path"].read_text())
    raw = bytearray(base64.b64decode(d["model"]["parameters"]))
    raw[100] ^= 0x80
    d["model"]["parameters"] = base64.b64encode(bytes(raw)).decode()
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(d))
    result = invoke("verify", bad)
    assert result.exit_code == 1
    assert "model.parameters" in result.output and "Traceback" not in result.output
    text = trained["path"].read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[:len(text) // 2])
    result = invoke("verify", cut)
    assert result.exit_code == 1 and "truncated" in result.output
    d = json.loads(text)
    d["version"] = 2
    wrong = tmp_path / "v2.json"
    wrong.write_text(json.dumps(d))
    result = invoke("verify", wrong)
    assert result.exit_code == 1
    assert "format version 2 is not supported (this mlitb reads 1)" in result.output
    result = invoke("verify", tmp_path / "missing.json")
    assert result.exit_code == 1 and "cannot read" in result.output
    result = invoke("verify", trained["path"], "--split", "dev")
    assert result.exit_code == 1 and "--split" in result.output


def test_verify_data_mismatch(trained, tmp_path):
    from mlitb.dataserver import write_archive

    test, names = trained["test"], trained["names"]
    other = write_archive(tmp_path / "other.zip", ((names[k], img[..., 0]) for img, k in
                                                   zip(test.images[:5], test.labels[:5])))
    result = invoke("verify", trained["path"], "--data", other)
    assert result.exit_code == 1
    assert "not in the zip" in result.output and "not in the manifest" in result.output


def test_predict(trained):
    pngs = trained["pngs"]
    result = invoke("predict", trained["path"], *pngs, "--top", "2", "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)
    assert [p["image"] for p in predictions] == [str(p) for p in pngs]
    assert all(len(p["top"]) == 2 for p in predictions)
    # the CLI's pipeline (PNG -> data server's conversion -> scaling) gives the net's own answer
    net = load_closure(trained["path"]).net()
    expected = net.predict(to_input(trained["test"].images[:12]))
    for p, row in zip(predictions, expected):
        best = int(np.argmax(row))
        assert p["top"][0]["label"] == trained["names"][best]
        assert p["top"][0]["value"] == pytest.approx(float(row[best]), abs=1e-6)
    hits = sum(p["top"][0]["label"] == str(k) for p, k in zip(predictions, trained["labels"]))
    assert hits >= 9  # a trained net
    result = invoke("predict", trained["path"], pngs[0], pngs[1])
    assert result.exit_code == 0, result.output
    assert str(pngs[0].name) in result.output and "%" in result.output and "#3" in result.output


def test_predict_resizes_like_the_data_server(trained, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.kron(trained["test"].images[0][..., 0], np.ones((4, 6), np.uint8))
                    ).convert("RGB").save(big)
    result = invoke("predict", trained["path"], big, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)[0]["top"]) == 3


def test_predict_bad_image(trained, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    result = invoke("predict", trained["path"], junk)
    assert result.exit_code == 1
    assert "junk.png" in result.output and "Traceback" not in result.output
    result = invoke("predict", trained["path"], tmp_path / "absent.png")
    assert result.exit_code == 1 and "cannot be read" in result.output


def test_export_convnetjs_round_trips(trained, tmp_path):
    out = tmp_path / "net.json"
    result = invoke("export", trained["path"], "--convnetjs", "-o", out)
    assert result.exit_code == 0, result.output
    net = from_convnetjs(json.loads(out.read_text()), labels=trained["names"])
    original = trained["project"].net
    assert net.params.tobytes() == original.params.tobytes()
    # ConvNetJS keeps no bias_pref (docs/formats.md); everything else is the same net
    assert [{k: v for k, v in d.items() if k != "bias_pref"} for d in net.spec()] == \
        [{k: v for k, v in d.items() if k != "bias_pref"} for d in original.spec()]
    x = to_input(trained["test"].images[:50])
    assert net.predict(x).tobytes() == original.predict(x).tobytes()


def test_export_model_and_stdout(trained, tmp_path):
    out = tmp_path / "model.json"
    result = invoke("export", trained["path"], "--model", "-o", out)
    assert result.exit_code == 0, result.output
    assert load_model(out).params.tobytes() == trained["project"].net.params.tobytes()
    result = invoke("export", trained["path"], "--model", "-o", "-")
    assert result.exit_code == 0
    assert json.loads(result.output)["format"] == "mlitb-model"
    result = invoke("export", trained["path"], "-o", out)
    assert result.exit_code == 1 and "choose one of --convnetjs or --model" in result.output
    result = invoke("export", trained["path"], "--model", "-o", tmp_path / "no" / "dir.json")
    assert result.exit_code == 1 and "cannot write" in result.output


def test_predict_on_a_text_file_says_it_is_not_an_image(trained, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, these are my notes\n")
    result = invoke("predict", trained["path"], notes)
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"{notes} is not an image (it holds text; JPEG, PNG" in text
    assert "BytesIO" not in text
    noise = tmp_path / "noise.png"
    noise.write_bytes(bytes(range(256)) * 4)
    result = invoke("predict", trained["path"], noise)
    assert "is not an image (its content matches no image format" in " ".join(
        result.output.split())


def test_inspect_tells_malformed_json_from_a_truncated_file(trained, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    result = invoke("inspect", bad)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "not valid JSON at line 1, column 2" in text and "truncated" not in text
    cut = tmp_path / "cut.json"
    cut.write_text(trained["path"].read_text()[:5000])
    result = invoke("inspect", cut)
    assert result.exit_code == 1 and "the file is truncated" in result.output
