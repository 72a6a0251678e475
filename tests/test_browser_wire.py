"""Compressed frames in the browser (mlitb/browser/lib/protocol.js) and Python (mlitb.protocol) are
one codec: headless Chromium encodes fixed vectors (every finite half, the ties between them,
random float32 bit patterns, saturation, zero blocks) to the same bytes as Python, decodes
Python's frames to the same floats, runs error feedback to the same frames round after round,
and refuses the same bad frames. Then end to end: a real master, a real data server, a Python
node process and a browser trainer (mlitb/browser/trainer.js in a Web Worker) train one ``int8``
project, and the master takes results from both kinds of worker.

Needs Playwright and Debian's Chromium (skips and says why without them).
"""

from __future__ import annotations

import base64
import threading
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from mlitb.bench.browser import BROWSER_DIR, serve_static
from mlitb.protocol import (
    Encoding,
    ResultKind,
    Training,
    decode_frame,
    encode_parameters,
    encode_result,
)
from mlitb.training import ErrorFeedback

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def page(browser: Any) -> Any:
    with serve_static({"/": BROWSER_DIR}) as url:
        page = browser.new_page()
        page.goto(url + "/index.html")
        page.evaluate("async () => { window.P = await import('/lib/protocol.js'); }")
        yield page
        page.close()


def b64(data: bytes | np.ndarray) -> str:
    return base64.b64encode(data if isinstance(data, bytes) else data.tobytes()).decode()


JS_HELPERS = """
window.fromB64 = (s) => { const bin = atob(s), out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i); return out.buffer; };
window.toB64 = (buf) => { const u = new Uint8Array(buf); let s = "";
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  return btoa(s); };
"""


def edge_vectors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    halves = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    ordered = np.sort(halves[halves >= 0])
    # Midpoints of neighbouring halves: exact ties in float32, so rounding to even shows.
    ties = ((ordered[:-1].astype(np.float64) + ordered[1:]) / 2).astype(np.float32)
    bits = rng.integers(0, 2**32, 30000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[np.isfinite(bits) & (np.abs(bits) < 2.0 ** 126)]
    special = np.array([0.0, -0.0, 65504, 65519, 65520, -65520, 1e6, -3e38, 6e-8, 3e-8,
                        2.9802322e-08, 5.9604645e-08, 1e-45], np.float32)
    grads = (rng.standard_normal(5000) * rng.random(5000) ** 6 * 50).astype(np.float32)
    int8 = np.concatenate([np.zeros(300), np.arange(-400, 400) / 2.0, grads[:700]])
    return {"halves": halves, "ties": np.concatenate([ties, -ties]), "bits": bits,
            "special": special, "gradients": grads, "int8_ties": int8.astype(np.float32)}


def test_js_encodes_the_same_bytes_as_python(page: Any) -> None:
    page.evaluate(JS_HELPERS)
    for name, vector in edge_vectors().items():
        for encoding in Encoding:
            python = encode_result(vector, parameter_version=9, samples=5, correct=1,
                                   loss_sum=2.5, compute_seconds=0.25, encoding=encoding)
            js = page.evaluate("""([v, e]) => toB64(P.encodeResult(new Float32Array(fromB64(v)),
                {parameterVersion: 9, samples: 5, correct: 1, lossSum: 2.5, computeSeconds: 0.25,
                 encoding: e}))""", [b64(vector), int(encoding)])
            js_bytes = base64.b64decode(js)
            assert len(js_bytes) == len(python), (name, encoding)
            if js_bytes != python:
                first = next(i for i, (a, b) in enumerate(zip(js_bytes, python)) if a != b)
                raise AssertionError(f"{name} in {encoding.name}: byte {first} differs")


def test_js_decodes_python_frames_to_the_same_floats(page: Any) -> None:
    page.evaluate(JS_HELPERS)
    for name, vector in edge_vectors().items():
        for encoding in Encoding:
            frame = encode_parameters(vector, parameter_version=3, iteration=4, encoding=encoding)
            python = decode_frame(frame)
            js = page.evaluate("""(f) => { const p = P.decodeParameters(fromB64(f));
                return [p.parameterVersion, p.iteration, p.encoding,
                        toB64(Float32Array.from(p.vector).buffer)]; }""", b64(frame))
            assert js[:3] == [3, 4, int(encoding)]
            decoded = np.frombuffer(base64.b64decode(js[3]), np.float32)
            # Bit for bit (the sign of zero too).
            np.testing.assert_array_equal(decoded.view(np.uint32),
                                          python.vector.view(np.uint32), err_msg=name)


def test_js_error_feedback_sends_the_same_frames_round_after_round(page: Any) -> None:
    page.evaluate(JS_HELPERS)
    rng = np.random.default_rng(11)
    rounds = [(rng.standard_normal(700) * 10.0 ** rng.integers(-6, 3)).astype(np.float32)
              for _ in range(5)]
    for encoding in (Encoding.FLOAT16, Encoding.INT8):
        feedback = ErrorFeedback()
        python = [encode_result(feedback.encode(v, encoding, parameter_version=k),
                                parameter_version=k, samples=1, loss_sum=0.0,
                                kind=ResultKind.PARAMETER_DELTA, encoding=encoding)
                  for k, v in enumerate(rounds)]
        js = page.evaluate("""([vs, e]) => { const f = new P.ErrorFeedback();
            return vs.map((v, k) => toB64(P.encodeResult(
              f.encode(new Float32Array(fromB64(v)), e, k),
              {parameterVersion: k, samples: 1, correct: 0, lossSum: 0, computeSeconds: 0,
               kind: P.RESULT_KIND.PARAMETER_DELTA, encoding: e}))); }""",
                           [[b64(v) for v in rounds], int(encoding)])
        assert [base64.b64decode(x) for x in js] == python, encoding.name


@pytest.mark.parametrize("patch, message", [
    ((6, 3), "parameters.encoding: unknown encoding 3"),
    ((24, 0xBF800000), "parameters.scales: scale 0 is -1"),
    ("truncate", "need a payload of"),
])
def test_js_refuses_bad_compressed_frames(page: Any, patch: Any, message: str) -> None:
    page.evaluate(JS_HELPERS)
    frame = bytearray(encode_parameters(np.linspace(-1, 1, 300, dtype=np.float32),
                                        parameter_version=1, iteration=1,
                                        encoding=Encoding.INT8))
    if patch == "truncate":
        frame = frame[:-1]
    elif patch[0] == 6:
        frame[6:8] = patch[1].to_bytes(2, "little")
    else:
        frame[patch[0]:patch[0] + 4] = patch[1].to_bytes(4, "little")
    error = page.evaluate("""(f) => { try { P.decodeParameters(fromB64(f)); return null; }
        catch (e) { return e.message; } }""", b64(bytes(frame)))
    assert error is not None and message in error


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_python_node_and_a_browser_trainer_train_one_int8_project(browser: Any,
                                                                    tmp_path: Path) -> None:
    from helpers.nodes import PROJECT, make_zips, node_command, start_node, wait_for

    from mlitb.dataserver import DataClient, InputShape, Store, serve_data_server
    from mlitb.datasets import DIGITS_SPEC
    from mlitb.master import Master

    train_zip, _, names, n_train, _ = make_zips(tmp_path)
    static = tmp_path / "static"  # the client's files plus an empty page, same origin as the data
    static.mkdir()
    for entry in BROWSER_DIR.iterdir():
        if not entry.name.startswith(("_", ".")):
            (static / entry.name).symlink_to(entry)
    (static / "blank.html").write_text(
        '<!doctype html><title>wire test</title><link rel="icon" href="data:,">')
    box: dict[str, Any] = {"accepted": [], "refused": []}
    ready, browser_started = threading.Event(), threading.Event()

    async def main() -> None:
        master: Master | None = None

        def on_registered(registration: Any) -> None:
            assert master is not None
            master.register_data(registration.project, registration.split, registration.ids,
                                 registration.label_names)

        async with trio.open_nursery() as nursery:
            data_port = await nursery.start(partial(
                serve_data_server, Store(tmp_path / "store"), "127.0.0.1", 0,
                on_registered=on_registered, upload_token="secret", static=static))
            master = Master(operator_token="secret", data_url=f"http://127.0.0.1:{data_port}")
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            project = master.create_project(PROJECT, DIGITS_SPEC, iteration_time=1.0,
                                            labels=names, training=Training(wire="int8"),
                                            hyperparameters={"learning_rate": 0.05})
            accept = project.accept_result

            def spy(worker_id: int, frame: Any, now: float) -> Any:
                refused = accept(worker_id, frame, now)
                member = project.members.get(worker_id)
                client = member.client if member is not None else "?"
                (box["refused"] if refused else box["accepted"]).append(
                    (client, frame.encoding, frame.samples, refused))
                return refused

            project.accept_result = spy  # type: ignore[method-assign]
            client = DataClient(f"http://127.0.0.1:{data_port}", token="secret")
            await trio.to_thread.run_sync(partial(
                client.upload, PROJECT, train_zip, split="train",
                shape=InputShape(width=8, height=8, channels=1)))
            node = await start_node(nursery, node_command(port, "--workers", "1"))
            box.update(data_port=data_port, master_port=port, node=node)
            ready.set()
            try:
                def took(kind: str) -> int:
                    return sum(1 for c, e, s, _ in box["accepted"] if c == kind and s > 0
                               and e is Encoding.INT8)

                await trio.to_thread.run_sync(browser_started.wait, 30)
                await wait_for(lambda: took("python") >= 3 and took("browser") >= 3,
                               "int8 results from both workers", 90)
                box["history"] = list(project.history)
                box["version"] = project.parameter_version
            finally:
                node.process.kill()
                nursery.cancel_scope.cancel()

    thread = threading.Thread(target=_run, args=(main, box), daemon=True)
    thread.start()
    assert ready.wait(60), "the master did not start"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"http://127.0.0.1:{box['data_port']}/blank.html")
        page.evaluate("""(url) => {
            window.logs = [];
            const w = new Worker('/trainer.js', {type: 'module'});
            w.onmessage = (e) => { if (e.data.type === 'log') window.logs.push(e.data); };
            w.postMessage({cmd: 'start', url, project: 'digits', role: 'trainer',
                           pageOrigin: location.origin, host: 'Chromium 1 on Linux'});
        }""", f"ws://127.0.0.1:{box['master_port']}")
        browser_started.set()
        thread.join(150)
        assert not thread.is_alive(), "the run did not finish"
        if box.get("exception") is not None:
            raise box["exception"]
        logs = page.evaluate("window.logs")
    finally:
        page.close()
    assert box["refused"] == [] or all("stale" in r for *_, r in box["refused"]), box["refused"]
    assert not any("refused something (bad_frame)" in entry["text"] for entry in logs), logs
    assert errors == []
    # Three int8 results taken from each worker: at least three steps of the model.
    assert box["version"] >= 3
    assert len([h for h in box["history"] if h.samples > 0]) >= 3
    assert "Traceback" not in box["node"].text


def _run(main: Any, box: dict[str, Any]) -> None:
    try:
        trio.run(main)
    except BaseException as exc:  # noqa: BLE001 (raised again in the test's thread)
        box["exception"] = exc
