"""The Redis store against a real ``redis-server``: the directory store's behaviour (ids,
labels, manifest, limits, deletes), atomic commits when several data servers write at once, and
its errors. The ``--store`` URL checks need no server."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_dataserver_store import decoded

from mlitb.dataserver import (
    LabelConflictError,
    ShapeMismatchError,
    Store,
    StoreError,
    UnknownIdsError,
    UnknownProjectError,
    check_store_url,
    open_store,
)
from mlitb.protocol import MAX_LABELS


def redis_store(url: str) -> Any:
    from mlitb.dataserver._redis import RedisStore

    return RedisStore(url)


def keys(url: str, pattern: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sorted(client.keys(pattern))
    finally:
        client.close()


def test_the_same_uploads_give_the_same_answers_as_the_directory_store(
        tmp_path: Path, redis_url: str) -> None:
    stores = [Store(tmp_path / "dir"), redis_store(redis_url)]
    uploads = [(decoded(["cat", "dog", "cat"]), "train"), (decoded(["dog"] * 4), "test"),
               (decoded(["bird", "cat", "eel", "bird"]), "train")]
    for upload, split in uploads:
        answers = [store.add("p", upload, split=split) for store in stores]
        assert answers[0].ids == answers[1].ids
        assert answers[0].label_names == answers[1].label_names
        assert answers[0].labels.tolist() == answers[1].labels.tolist()
    ids = [10, 0, 4, 3, 7]
    (images_a, labels_a), (images_b, labels_b) = (store.get("p", ids) for store in stores)
    assert np.array_equal(images_a, images_b) and labels_a.tolist() == labels_b.tolist()
    assert np.array_equal(images_b[0], uploads[2][0].images[3])
    for split in (None, "train", "test"):
        assert stores[0].ids("p", split).tolist() == stores[1].ids("p", split).tolist()
    assert stores[0].info("p") == stores[1].info("p")
    assert stores[0].manifest("p") == stores[1].manifest("p")
    assert stores[1].labels_with("p", ["fox", "cat"]) == ("cat", "dog", "bird", "eel", "fox")
    assert stores[1].projects() == ["p"] and stores[1].shape("q") is None
    assert stores[1].get("p", [])[0].shape == (0, 3, 4, 4)
    # Another process on the same Redis sees it all (nothing is kept only in this one).
    again = redis_store(redis_url)
    assert again.manifest("p") == stores[0].manifest("p")
    assert again.identity == stores[1].identity and again.identity.startswith("redis-")


def test_refusals_are_the_directory_stores(redis_url: str) -> None:
    store = redis_store(redis_url)
    with pytest.raises(UnknownProjectError, match="'nope'"):
        store.get("nope", [0])
    store.add("p", decoded(["a"] * 3))
    with pytest.raises(UnknownIdsError, match=r"has ids 0-2; 2 unknown id\(s\): 3,7"):
        store.get("p", [0, 3, 7])
    with pytest.raises(ShapeMismatchError, match="4x4x3"):
        store.add("p", decoded(["a"], shape=(1, 4, 4)))
    with pytest.raises(LabelConflictError, match="not the model's"):
        store.add("p", decoded(["b"]), labels=["b", "a"])
    with pytest.raises(StoreError, match="project name"):
        store.add("../x", decoded(["a"]))
    many = [f"l{i}" for i in range(MAX_LABELS + 1)]
    with pytest.raises(StoreError, match=f"over the limit of {MAX_LABELS}"):
        store.add("q", decoded(many, shape=(1, 1, 1)))
    with pytest.raises(StoreError, match="at least one image"):
        store.add("p", decoded([]))
    assert store.info("p").count == 3  # none of it changed anything
    assert len(keys(redis_url, "mlitb:seg:*")) == 1  # and left no images behind


def test_delete_and_generations(redis_url: str) -> None:
    store, other = redis_store(redis_url), redis_store(redis_url)
    store.add("p", decoded(["a", "b"]))
    assert other.ids("p").tolist() == [0, 1]  # `other` now holds the records of "p"
    generation = other.generation("p")
    store.delete("p")
    assert other.projects() == [] and other.generation("p") == generation + 1
    with pytest.raises(UnknownProjectError):
        other.get("p", [0])
    with pytest.raises(UnknownProjectError):
        store.delete("p")
    assert keys(redis_url, "mlitb:seg:*") == [] and keys(redis_url, "mlitb:p:p:*") == [
        b"mlitb:p:p:generation"]
    # An upload that began before the delete stores nothing; a new one starts at id 0 again,
    # and `other` does not serve its old records for it.
    with pytest.raises(StoreError, match="was deleted"):
        other.add("p", decoded(["a"]), generation=generation)
    fresh = decoded(["z", "y", "z"])
    assert other.add("p", fresh, generation=generation + 1).ids == range(3)
    assert other.get("p", [0, 2])[1].tolist() == [1, 1]
    assert other.info("p").labels == ("y", "z")
    assert len(keys(redis_url, "mlitb:seg:*")) == 1


def test_staged_images_are_invisible_until_the_commit_and_expire(redis_url: str) -> None:
    from mlitb.dataserver import _redis

    store = redis_store(redis_url)
    store.add("p", decoded(["a", "b"]))
    before = store.manifest("p")
    # A data server that dies between writing an upload's images and committing them:
    store._stage("mlitb:seg:crashed", decoded(["a"] * 5).images)
    assert redis_store(redis_url).manifest("p") == before
    with pytest.raises(UnknownIdsError):
        store.get("p", [2])
    import redis

    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl("mlitb:seg:crashed")
    client.close()
    assert 0 < ttl <= _redis.STAGING_TTL
    # A committed upload's images never expire.
    store.add("p", decoded(["a"]))
    client = redis.Redis.from_url(redis_url)
    segments = store._committed("p")["segments"]
    assert all(client.ttl(key) == -1 for _, _, key in segments)
    client.close()


def test_data_servers_writing_at_once_get_disjoint_ids_and_readers_see_whole_uploads(
        redis_url: str) -> None:
    writers = [redis_store(redis_url) for _ in range(3)]  # three data servers, one Redis
    reader = redis_store(redis_url)
    # Writer w uploads images of one label "w{w}", 5, 6, ... 10 of them, in this order.
    uploads = {w: [decoded([f"w{w}"] * (5 + k), shape=(1, 2, 2)) for k in range(6)]
               for w in range(3)}
    prefixes = {int(x) for x in np.cumsum([0, 5, 6, 7, 8, 9, 10])}
    registrations: dict[int, list[Any]] = {w: [] for w in range(3)}
    problems: list[str] = []
    done = threading.Event()

    def write(w: int) -> None:
        for upload in uploads[w]:
            registrations[w].append(writers[w].add("p", upload))

    def read() -> None:
        while not done.is_set():
            try:
                info = reader.info("p")
                _, labels = reader.get("p", range(info.count))
            except UnknownProjectError:
                continue
            # What a reader sees is whole uploads: per writer, a prefix of its uploads.
            for index, name in enumerate(info.labels):
                if int((labels == index).sum()) not in prefixes:
                    problems.append(f"{name}: {(labels == index).sum()} ids of {info.count}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    watcher = threading.Thread(target=read)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(60)
    assert problems == []
    ids = sorted(i for rs in registrations.values() for r in rs for i in r.ids)
    total = sum(len(u) for us in uploads.values() for u in us)
    assert ids == list(range(total))  # no id given twice, none skipped
    for w in range(3):
        for registration, upload in zip(registrations[w], uploads[w]):
            images, labels = reader.get("p", list(registration.ids))
            assert np.array_equal(images, upload.images)
            assert {reader.info("p").labels[i] for i in labels.tolist()} == {f"w{w}"}


def test_a_full_redis_refuses_the_upload_and_keeps_the_old_state(tmp_path: Path) -> None:
    from helpers.redis_server import redis_server

    with redis_server(tmp_path / "small", "--maxmemory", "3mb",
                      "--maxmemory-policy", "noeviction") as url:
        store = redis_store(url)
        store.add("p", decoded(["a", "b"], shape=(3, 64, 64)))
        before = store.manifest("p")
        with pytest.raises(StoreError, match="Redis store .*OutOfMemoryError: command not "
                           "allowed when used memory > 'maxmemory'") as caught:
            store.add("p", decoded(["a"] * 400, shape=(3, 64, 64)))  # ~4.9 MB of images
        assert str(caught.value).isprintable() and len(str(caught.value)) < 500
        assert store.manifest("p") == before
        assert len(keys(url, "mlitb:seg:*")) == 1  # the refused upload's part is gone


def test_store_urls_are_checked_where_they_enter() -> None:
    assert check_store_url("redis://127.0.0.1:6380/2") == ("127.0.0.1", 6380, 2)
    assert check_store_url("redis://data-host") == ("data-host", 6379, 0)
    for bad, why in [("http://x:1/0", "only redis://"), ("redis://:1/0", "no host"),
                     ("redis://x:99999/0", "out of range"), ("redis://x:1/zero", "a number"),
                     ("redis://x:1/0?ssl=1", r"no \?query"), ("redis://x:1/0/1", "a number")]:
        with pytest.raises(StoreError, match=why) as caught:
            check_store_url(bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(StoreError) as caught:
        check_store_url("redis://:secret-pw@x:1/zero")
    assert "secret-pw" not in str(caught.value) and ":***@x:1" in str(caught.value)


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[redis]')")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match=f"the Redis store redis://127.0.0.1:{port}/0") as caught:
        open_store(tmp_path, f"redis://127.0.0.1:{port}/0")
    assert "\n" not in str(caught.value)


def test_without_redis_py_the_error_is_one_line(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['redis'] = None\n"
            "from pathlib import Path\n"
            "from mlitb.dataserver import open_store, StoreError\n"
            "try:\n"
            f"    open_store(Path({str(tmp_path)!r}), 'redis://127.0.0.1:1/0')\n"
            "except StoreError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1
    assert "needs the redis package: pip install 'mlitb[redis]'" in out.stdout


@pytest.fixture
def small_redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server with 4 MB of memory and no eviction. A fixture, so that its skip
    (no redis-server, no redis-py) keeps its reason: a skip inside a trio test loses it."""
    from helpers.redis_server import redis_server

    with redis_server(tmp_path / "small", "--maxmemory", "4mb",
                      "--maxmemory-policy", "noeviction") as url:
        yield url


@pytest.mark.trio
async def test_the_http_api_over_redis_and_a_full_redis_is_a_500(tmp_path: Path,
                                                                  small_redis_url: str) -> None:
    from functools import partial

    import trio
    from helpers.dataserver import TEST_TOKEN, dataset

    from mlitb.dataserver import DataClient, DataServerError, InputShape, serve_data_server

    store = await trio.to_thread.run_sync(redis_store, small_redis_url)
    shape = InputShape(width=100, height=100, channels=3)  # 30 kB an image
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_data_server, store, "127.0.0.1", 0,
                                           upload_token=TEST_TOKEN))
        client = DataClient(f"http://127.0.0.1:{port}", token=TEST_TOKEN)
        small = dataset(tmp_path / "small.zip", ["a", "b", "a"], side=100)
        answer = await trio.to_thread.run_sync(
            lambda: client.upload("p", small, shape=shape))
        assert answer["ids"] == [0, 2] and answer["labels"] == ["a", "b"]
        frame = await trio.to_thread.run_sync(
            lambda: client.batch("p", np.array([2, 0]), shape=(3, 100, 100)))
        images, labels = await trio.to_thread.run_sync(store.get, "p", [2, 0])
        assert frame.ids.tolist() == [2, 0] and frame.labels.tolist() == labels.tolist()
        assert np.array_equal(frame.pixels.reshape(images.shape), images)
        big = dataset(tmp_path / "big.zip", ["a"] * 200, side=100)  # 6 MB decoded
        with pytest.raises(DataServerError) as caught:
            await trio.to_thread.run_sync(lambda: client.upload("p", big, shape=shape))
        assert caught.value.status == 500 and "maxmemory" in caught.value.detail
        info = await trio.to_thread.run_sync(lambda: client.info("p"))
        assert info["count"] == 3  # nothing of the refused upload is visible
        nursery.cancel_scope.cancel()
