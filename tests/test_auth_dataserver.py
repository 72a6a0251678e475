"""Issue 11: every write route of the data server needs a credential, over real HTTP on
loopback against ``serve_cluster`` (the data server ``mlitb master`` embeds): the master's
operator token, or (adding data only) the project's contributor token. Reads stay open."""

from __future__ import annotations

import http.client
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.dataserver import dataset, png

from mlitb.cluster import ClusterAddress, open_store, serve_cluster
from mlitb.dataserver import DataServer, Store
from mlitb.master import Master

OPERATOR = "operator-secret-1"
CONTRIBUTOR = "contributor-secret-1"
OTHER_CONTRIBUTOR = "contributor-secret-2"
SPEC = [{"type": "input", "out_sx": 8, "out_sy": 8, "out_depth": 3},
        {"type": "softmax", "num_classes": 2}]

# (method, path template) of every route that writes, and whether a contributor may use it.
WRITE_ROUTES = {
    ("POST", "/projects/{project}/uploads"): True,
    ("POST", "/projects/{project}/images"): True,
    ("DELETE", "/projects/{project}"): False,
}
READ_ONLY_POSTS = {"/projects/{project}/batch"}  # POST only to carry a long id list


def test_the_table_names_every_write_route(tmp_path: Path) -> None:
    """A new write route must join the table (and so the checks below)."""
    app = DataServer(Store(tmp_path, fsync=False)).app
    # The browser client's files are a Mount of StaticFiles, which answers GET and HEAD only.
    from mlitb.dataserver._static import BrowserFiles

    assert all(isinstance(route.app, BrowserFiles) for route in app.routes
               if not hasattr(route, "methods"))
    writes = {(method, route.path) for route in app.routes
              for method in (getattr(route, "methods", None) or ())
              if method in ("POST", "PUT", "PATCH", "DELETE") and route.path not in READ_ONLY_POSTS}
    assert writes == set(WRITE_ROUTES)


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Master, ClusterAddress, int]]:
    master = Master(operator_token=OPERATOR)
    store = open_store(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        address = await nursery.start(lambda task_status: serve_cluster(
            master, store, "127.0.0.1", 0, 0, task_status=task_status))
        for name in ("p", "q"):
            master.create_project(name, SPEC, iteration_time=1.0)
        master.set_access("p", contributor_token=CONTRIBUTOR)
        master.set_access("q", contributor_token=OTHER_CONTRIBUTOR)
        yield master, address, int(address.data_url.rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


async def request(port: int, method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    def run() -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            try:
                connection.request(method, path, body=body, headers=headers or {})
            except (BrokenPipeError, ConnectionResetError):
                pass
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()
    return await trio.to_thread.run_sync(run)


def write(route: tuple[str, str], tmp_path: Path, project: str = "p"
          ) -> tuple[str, str, bytes | None, dict[str, str]]:
    method, template = route
    path = template.format(project=project)
    if path.endswith("/uploads"):
        return method, path + "?split=train", dataset(tmp_path / "a.zip", ["a", "b"]).read_bytes(), \
            {"Content-Type": "application/zip"}
    if path.endswith("/images"):
        return method, path + "?label=a", png(8), {"Content-Type": "image/png"}
    return method, path, None, {}


CREDENTIALS = [  # (name, Authorization header or None, may add data, may delete)
    ("none", None, False, False),
    ("empty", "", False, False),
    ("not bearer", f"Basic {OPERATOR}", False, False),
    ("bare token", OPERATOR, False, False),
    ("wrong", "Bearer wrong-token", False, False),
    ("a prefix of the operator token", f"Bearer {OPERATOR[:-1]}", False, False),
    ("another project's contributor token", f"Bearer {OTHER_CONTRIBUTOR}", False, False),
    ("the contributor token", f"Bearer {CONTRIBUTOR}", True, False),
    ("the operator token", f"Bearer {OPERATOR}", True, True),
]


@pytest.mark.trio
@pytest.mark.parametrize("route", list(WRITE_ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
async def test_every_write_route_needs_the_right_token(tmp_path: Path,
                                                       route: tuple[str, str]) -> None:
    contributor_route = WRITE_ROUTES[route]
    with trio.fail_after(60):
        async with cluster(tmp_path) as (master, address, port):
            store = master.manifest_provider.__self__  # type: ignore[union-attr]
            if route[0] == "DELETE":  # something to delete
                method, path, body, headers = write(("POST", "/projects/{project}/uploads"),
                                                    tmp_path)
                headers["Authorization"] = f"Bearer {OPERATOR}"
                assert (await request(port, method, path, body, headers))[0] == 201
            for name, authorization, may_add, may_delete in CREDENTIALS:
                allowed = may_add if contributor_route else may_delete
                method, path, body, headers = write(route, tmp_path)
                if authorization is not None:
                    headers["Authorization"] = authorization
                before = master.projects["p"].allocator.total
                status, answer = await request(port, method, path, body, headers)
                if allowed:
                    assert status in (200, 201), (name, status, answer)
                else:
                    assert status == 401, (name, status, answer)
                    assert b"token" in answer and OPERATOR.encode() not in answer
                    assert master.projects["p"].allocator.total == before, name  # nothing stored
                    if route[0] == "DELETE":
                        assert "p" in store.projects(), name  # nothing deleted
            # Reads need nothing.
            assert (await request(port, "GET", "/projects"))[0] == 200
            assert (await request(port, "GET", "/"))[0] == 200


@pytest.mark.trio
async def test_reads_stay_open_and_a_contributor_cannot_delete(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(tmp_path) as (master, address, port):
            method, path, body, headers = write(("POST", "/projects/{project}/uploads"), tmp_path)
            headers["Authorization"] = f"Bearer {CONTRIBUTOR}"
            assert (await request(port, method, path, body, headers))[0] == 201
            assert (await request(port, "GET", "/projects/p"))[0] == 200
            assert (await request(port, "GET", "/projects/p/batch?ids=0-1"))[0] == 200
            status, _ = await request(port, "DELETE", "/projects/p",
                                      headers={"Authorization": f"Bearer {CONTRIBUTOR}"})
            assert status == 401
            assert master.projects["p"].allocator.total == 2
            # The operator may rotate the contributor token away: the old one stops working.
            master.set_access("p")
            status, _ = await request(port, method, path, body, headers)
            assert status == 401


async def allow_origin(port: int, method: str, path: str, body: bytes | None = None,
                       headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    """The status and the Access-Control-Allow-Origin header of an answer."""
    def run() -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("access-control-allow-origin")
        finally:
            connection.close()
    return await trio.to_thread.run_sync(run)


@pytest.mark.trio
async def test_what_a_trainer_reads_answers_any_origin_and_writes_do_not(
        tmp_path: Path) -> None:
    """A browser trainer may be sent to a data server other than its page's: the project's
    info and batches (and their errors) carry ``Access-Control-Allow-Origin: *``; the writes
    and everything else do not, and a cross-origin write is still refused."""
    elsewhere = {"Origin": "http://127.0.0.1:1"}
    with trio.fail_after(60):
        async with cluster(tmp_path) as (master, address, port):
            method, path, body, headers = write(("POST", "/projects/{project}/uploads"),
                                                tmp_path)
            headers["Authorization"] = f"Bearer {OPERATOR}"
            assert await allow_origin(port, method, path, body, headers) == (201, None)
            ids = {"Content-Type": "text/plain", **elsewhere}
            assert await allow_origin(port, "GET", "/projects/p", headers=elsewhere) == (200, "*")
            assert await allow_origin(port, "POST", "/projects/p/batch", b"0-1", ids) == (200, "*")
            assert await allow_origin(port, "GET", "/projects/p/batch?ids=0-1") == (200, "*")
            assert await allow_origin(port, "POST", "/projects/p/batch", b"7-9", ids) == (404, "*")
            assert await allow_origin(port, "GET", "/projects/nope") == (404, "*")
            for other in ("/projects", "/healthz", "/projects/p/manifest", "/"):
                assert (await allow_origin(port, "GET", other))[1] is None, other
            headers.update(elsewhere)
            assert await allow_origin(port, method, path, body, headers) == (403, None)
            assert await allow_origin(port, "DELETE", "/projects/p", headers={
                "Authorization": f"Bearer {OPERATOR}", **elsewhere}) == (403, None)
            assert master.projects["p"].allocator.total == 2


@pytest.mark.trio
async def test_a_join_token_projects_data_is_private_to_its_token_holders(
        tmp_path: Path) -> None:
    """Info, manifest and batches of a join-token project need its join token, its
    contributor token or the operator token; an open project's stay open; a browser's
    preflight for the Authorization header is answered."""
    join = "join-secret-1"
    with trio.fail_after(60):
        async with cluster(tmp_path) as (master, address, port):
            method, path, body, headers = write(("POST", "/projects/{project}/uploads"),
                                                tmp_path)
            headers["Authorization"] = f"Bearer {OPERATOR}"
            assert (await request(port, method, path, body, headers))[0] == 201
            assert (await request(port, method, path.replace("/p/", "/q/"), body,
                                  headers))[0] == 201
            master.set_access("p", join_token=join, contributor_token=CONTRIBUTOR)
            reads = [("GET", "/projects/p", None, {}),
                     ("GET", "/projects/p/manifest", None, {}),
                     ("GET", "/projects/p/batch?ids=0-1", None, {}),
                     ("POST", "/projects/p/batch", b"0-1", {"Content-Type": "text/plain"})]
            for method, path, body, extra in reads:
                for authorization, allowed in ((None, False), ("Bearer wrong", False),
                                               (f"Bearer {OTHER_CONTRIBUTOR}", False),
                                               (f"Basic {join}", False),
                                               (f"Bearer {join}", True),
                                               (f"Bearer {CONTRIBUTOR}", True),
                                               (f"Bearer {OPERATOR}", True)):
                    sent = dict(extra) | ({"Authorization": authorization}
                                          if authorization else {})
                    status, answer = await request(port, method, path, body, sent)
                    assert status == (200 if allowed else 401), (path, authorization, answer)
                    if not allowed:
                        assert b"join token" in answer and join.encode() not in answer
                q = path.replace("/projects/p", "/projects/q", 1)
                assert (await request(port, method, q, body, dict(extra)))[0] == 200, q
            assert (await request(port, "GET", "/projects"))[0] == 200  # names stay public
            preflight = await trio.to_thread.run_sync(lambda: _options(
                port, "/projects/p/batch"))
            assert preflight[0] == 204
            assert preflight[1]["access-control-allow-origin"] == "*"
            assert "authorization" in preflight[1]["access-control-allow-headers"]
            assert "POST" in preflight[1]["access-control-allow-methods"]


def _options(port: int, path: str) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("OPTIONS", path, headers={
            "Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.mark.trio
async def test_a_data_server_without_a_token_accepts_no_writes(tmp_path: Path) -> None:
    from functools import partial

    from mlitb.dataserver import serve_data_server

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            store = Store(tmp_path / "s", fsync=False)
            port = await nursery.start(partial(serve_data_server, store, "127.0.0.1", 0))
            for route in WRITE_ROUTES:
                method, path, body, headers = write(route, tmp_path)
                headers["Authorization"] = "Bearer anything"
                status, answer = await request(port, method, path + "&width=8&height=8&channels=3"
                                               if "?" in path else path, body, headers)
                assert status == 401 and b"without an upload token" in answer
            assert store.projects() == []
            nursery.cancel_scope.cancel()
