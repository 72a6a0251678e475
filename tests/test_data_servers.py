"""Separate data servers (issue 13): ``mlitb master --no-data-server`` announces the
``mlitb data-server`` processes that registered with it, and nodes train from them. Real
processes on loopback; the master's own status says whether the node cached and trained."""

from __future__ import annotations

from pathlib import Path

from helpers.procs import (
    Proc,
    digits_zips,
    free_port,
    operator_call,
    project_status,
    start_data_server,
    start_master,
    wait_until,
)

from mlitb.dataserver import DataClient, DataServerError
from mlitb.datasets import DIGITS_SPEC
from mlitb.protocol import CreateProject

TOKEN = "data-servers-test-token"


def create_digits(url: str) -> None:
    operator_call(url, TOKEN, lambda op: op.request(CreateProject(
        request_id="-", name="digits", spec=tuple(DIGITS_SPEC), iteration_time=0.5)))


def trained(url: str, after: int = 0) -> object:
    """The project's status once it has iterated past ``after`` with samples trained and data
    cached, else None."""
    status = project_status(url, TOKEN, "digits")
    samples = sum(point.samples for point in status.history)
    if status.iteration > after and samples > 0 and status.data.cached > 0:
        return status
    return None


def test_a_node_trains_from_a_separate_data_server(tmp_path: Path) -> None:
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server")
    procs: tuple[Proc, ...] = (master,)
    try:
        # Before any data server registers, the master announces none.
        welcome = operator_call(url, TOKEN, lambda op: _welcome(op))
        assert welcome.data_url is None and welcome.data_urls == ()
        create_digits(url)
        data, data_url = start_data_server(url, TOKEN, tmp_path / "data")
        procs += (data,)
        welcome = operator_call(url, TOKEN, lambda op: _welcome(op))
        assert welcome.data_urls == (data_url,) and welcome.data_url == data_url
        (train_zip,), _ = digits_zips(tmp_path)
        assert DataClient(data_url, token=TOKEN).upload("digits", train_zip)["count"] > 1000
        node = Proc("node", "join", url, "--project", "digits", "--workers", "1")
        procs += (node,)
        first = wait_until(lambda: trained(url), "the node to cache data and train", 90, procs)
        assert first.data.total > 1000
        later = wait_until(lambda: trained(url, first.iteration), "more iterations", 60, procs)
        assert later.iteration > first.iteration
        assert DataClient(data_url).health()["batches"] > 0  # the node's batches came from it
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert "no data has been uploaded" not in node.text


def test_the_master_refuses_a_second_data_server_with_a_store_of_its_own(tmp_path: Path
                                                                        ) -> None:
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server")
    procs: tuple[Proc, ...] = (master,)
    try:
        first, first_url = start_data_server(url, TOKEN, tmp_path / "a")
        procs += (first,)
        second = Proc("data-server", "--master", url, "--token", TOKEN, "--port", "0",
                      "--data-dir", str(tmp_path / "b"))
        procs += (second,)
        assert second.popen.wait(60) == 1
        assert "several data servers must share one store" in second.text
        welcome = operator_call(url, TOKEN, lambda op: _welcome(op))
        assert welcome.data_urls == (first_url,)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_a_master_with_its_own_data_server_refuses_a_separate_one(tmp_path: Path) -> None:
    master, url = start_master(tmp_path / "master", TOKEN)
    try:
        second = Proc("data-server", "--master", url, "--token", TOKEN, "--port", "0",
                      "--data-dir", str(tmp_path / "b"))
        assert second.popen.wait(60) == 1, second.text
        assert "several data servers must share one store" in second.text
    finally:
        master.stop()


async def _welcome(op: object) -> object:
    return op.welcome  # type: ignore[attr-defined]


def test_two_data_servers_on_one_redis_and_a_node_training_from_both(
        tmp_path: Path, redis_url: str) -> None:
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server")
    procs: tuple[Proc, ...] = (master,)
    try:
        create_digits(url)
        a, a_url = start_data_server(url, TOKEN, tmp_path / "a", "--store", redis_url)
        procs += (a,)
        b, b_url = start_data_server(url, TOKEN, tmp_path / "b", "--store", redis_url)
        procs += (b,)
        welcome = operator_call(url, TOKEN, lambda op: _welcome(op))
        assert sorted(welcome.data_urls) == sorted([a_url, b_url])
        (first_zip, second_zip), _ = digits_zips(tmp_path, parts=2)
        # An upload to either is the project's data at both: one store behind them.
        first = DataClient(a_url, token=TOKEN).upload("digits", first_zip)
        assert DataClient(b_url).info("digits")["count"] == first["count"]
        # One node, two workers: one joins first and starts at one data server, the other at
        # the other (the master spreads workers round-robin).
        node = Proc("node", "join", url, "--project", "digits", "--workers", "2")
        procs += (node,)
        status = wait_until(lambda: trained(url), "the node to cache data and train", 90, procs)
        wait_until(lambda: project_status(url, TOKEN, "digits").data.cached == first["count"],
                   "every uploaded id cached", 60, procs)
        served = {u: DataClient(u).health()["batches"] for u in (a_url, b_url)}
        assert all(n > 0 for n in served.values()), served
        # Data server a goes away: the master tells the workers, and what comes next (an
        # upload through b) reaches them from b alone.
        a.stop()
        wait_until(lambda: operator_call(url, TOKEN, lambda op: _welcome(op)).data_urls
                   == (b_url,), "the master to forget data server a", 30, procs)
        before = DataClient(b_url).health()["batches"]
        second = DataClient(b_url, token=TOKEN).upload("digits", second_zip)
        total = first["count"] + second["count"]
        wait_until(lambda: project_status(url, TOKEN, "digits").data.cached == total,
                   "the second upload cached through b", 90, procs)
        assert DataClient(b_url).health()["batches"] > before
        later = wait_until(lambda: trained(url, status.iteration), "training to go on", 60,
                           procs)
        assert later.data.total == total
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert "Traceback" not in node.text, node.text



def test_a_data_server_outlives_a_master_restart_and_registers_again(tmp_path: Path) -> None:
    """The master goes away: the data server keeps serving what it stores, refuses uploads
    (503, Retry-After) rather than storing what the master would not learn of, and once the
    master is back on its port it is announced again, its data registered again (a master
    restarted with a fresh directory knew none of it), and uploads go through."""
    import pytest

    port = str(free_port())
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server", "--port", port)
    procs: tuple[Proc, ...] = (master,)
    try:
        create_digits(url)
        data, data_url = start_data_server(url, TOKEN, tmp_path / "data")
        procs += (data,)
        (first_zip, second_zip), _ = digits_zips(tmp_path, parts=2)
        first = DataClient(data_url, token=TOKEN).upload("digits", first_zip)
        master.stop()
        data.wait_for(r"lost the master .*reconnecting in", 30)
        assert DataClient(data_url).info("digits")["count"] == first["count"]  # still serves
        with pytest.raises(DataServerError) as refused:
            DataClient(data_url, token=TOKEN).upload("digits", second_zip)
        assert refused.value.status == 503 and "cannot reach its master" in refused.value.detail
        assert DataClient(data_url).info("digits")["count"] == first["count"]  # nothing stored
        # A new master on the same port, with an empty directory: the project is created again,
        # and the data server registers itself and the data it holds.
        master, url = start_master(tmp_path / "master-2", TOKEN, "--no-data-server",
                                   "--port", port)
        procs = (master, data)
        create_digits(url)
        data.wait_for(r"registered again with the master", 60)
        wait_until(lambda: project_status(url, TOKEN, "digits").data.total == first["count"],
                   "the stored data registered with the new master", 30, procs)
        welcome = operator_call(url, TOKEN, lambda op: _welcome(op))
        assert welcome.data_urls == (data_url,)
        second = DataClient(data_url, token=TOKEN).upload("digits", second_zip)
        total = first["count"] + second["count"]
        wait_until(lambda: project_status(url, TOKEN, "digits").data.total == total,
                   "the second upload registered", 30, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert "Traceback" not in data.text, data.text


def test_a_standalone_data_server_checks_the_projects_tokens(tmp_path: Path) -> None:
    """The master sends an authorized operator the token hashes with each project: a
    standalone data server keeps a join-token project's data to its token holders and takes
    uploads made with its contributor token, as the master's own data server does."""
    import pytest

    from mlitb.protocol import SetAccess

    join, contribute = "standalone-join-1", "standalone-contribute-1"
    master, url = start_master(tmp_path / "master", TOKEN, "--no-data-server")
    procs: tuple[Proc, ...] = (master,)
    try:
        create_digits(url)
        data, data_url = start_data_server(url, TOKEN, tmp_path / "data")
        procs += (data,)
        (train_zip,), _ = digits_zips(tmp_path)
        stored = DataClient(data_url, token=TOKEN).upload("digits", train_zip)["count"]
        assert DataClient(data_url).info("digits")["count"] == stored  # open: anyone reads
        operator_call(url, TOKEN, lambda op: op.request(SetAccess(
            request_id="-", project="digits", join_token=join, contributor_token=contribute)))

        def refused_without_token() -> bool:
            try:
                DataClient(data_url).info("digits")
            except DataServerError as exc:
                return exc.status == 401
            return False

        wait_until(refused_without_token, "the data server to learn the join token", 15, procs)
        for token in (join, contribute, TOKEN):
            assert DataClient(data_url, token=token).batch("digits", [0, 1]).ids.size == 2
        with pytest.raises(DataServerError) as wrong:
            DataClient(data_url, token="not-the-token").batch("digits", [0])
        assert wrong.value.status == 401
        added = DataClient(data_url, token=contribute).upload("digits", train_zip)["count"]
        wait_until(lambda: project_status(url, TOKEN, "digits").data.total == stored + added,
                   "the contributed upload registered", 30, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
