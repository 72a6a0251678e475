"""A real Python node (``mlitb node join`` processes) trains an ``int8`` project and a ``float16``
``local`` one on digits through a real master and data server: every result the master takes is
in the project's encoding, none is refused for its encoding, and the training loss falls."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from mlitb.protocol import Encoding, Training, result_encoding

dataserver = pytest.importorskip("mlitb.dataserver")


@pytest.mark.trio
@pytest.mark.slow
@pytest.mark.parametrize("training", [
    Training(wire="int8"),
    Training(wire="float16", algorithm="local", batch_size=16),
], ids=["int8-gradient", "float16-local"])
async def test_a_node_trains_a_compressed_project(tmp_path: Path, training: Training) -> None:
    from helpers.nodes import PROJECT, make_zips, node_command, start_node, wait_for

    from mlitb.dataserver import DataClient, InputShape, Store, serve_data_server
    from mlitb.datasets import DIGITS_SPEC
    from mlitb.master import Master

    train_zip, _, names, _, _ = make_zips(tmp_path)
    master: Master | None = None
    taken: list[tuple[Encoding, int]] = []
    refused: list[str] = []

    def on_registered(registration: Any) -> None:
        assert master is not None
        master.register_data(registration.project, registration.split, registration.ids,
                             registration.label_names)

    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            data_port = await nursery.start(partial(
                serve_data_server, Store(tmp_path / "store"), "127.0.0.1", 0,
                on_registered=on_registered, upload_token="secret"))
            master = Master(operator_token="secret", data_url=f"http://127.0.0.1:{data_port}")
            port = await nursery.start(master.serve, "127.0.0.1", 0)
            lr = 0.05 if training.algorithm == "gradient" else 0.02
            project = master.create_project(PROJECT, DIGITS_SPEC, iteration_time=1.0,
                                            labels=names, training=training,
                                            hyperparameters={"learning_rate": lr})
            accept = project.accept_result

            def spy(worker_id: int, frame: Any, now: float) -> Any:
                why = accept(worker_id, frame, now)
                if why is None:
                    taken.append((frame.encoding, frame.samples))
                else:
                    refused.append(str(why))
                return why

            project.accept_result = spy  # type: ignore[method-assign]
            client = DataClient(f"http://127.0.0.1:{data_port}", token="secret")
            await trio.to_thread.run_sync(partial(
                client.upload, PROJECT, train_zip, split="train",
                shape=InputShape(width=8, height=8, channels=1)))
            node = await start_node(nursery, node_command(port, "--workers", "2"))
            try:
                def trained() -> int:
                    return sum(1 for h in project.history if h.samples > 0)

                await wait_for(lambda: trained() >= 14, "14 iterations that trained", 120)
            finally:
                node.process.kill()
            nursery.cancel_scope.cancel()
    assert "Traceback" not in node.text, node.text
    assert not [r for r in refused if "encoding" in r], refused
    assert {e for e, s in taken if s > 0} == {result_encoding(training.wire)}
    losses = [h.loss for h in project.history if h.samples > 0]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
