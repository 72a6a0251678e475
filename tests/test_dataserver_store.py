"""The embedded store: ids, label growth, reads by id, atomic commits, crashes and reopening."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlitb.dataserver import (
    Decoded,
    InputShape,
    ShapeMismatchError,
    Store,
    StoreError,
    UnknownIdsError,
    UnknownProjectError,
    _files,
)

rng = np.random.default_rng(2)


def decoded(labels: list[str], shape: tuple[int, int, int] = (3, 4, 4)) -> Decoded:
    """A decoded upload with random pixels, built without a zip."""
    names = tuple(sorted(set(labels)))
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    hashes = tuple(hashlib.sha256(image.tobytes()).hexdigest() for image in images)
    return Decoded(images=images, labels=np.array([names.index(x) for x in labels], np.uint32),
                   label_names=names, sha256=hashes,
                   names=tuple(f"{x}/{i}.png" for i, x in enumerate(labels)))


def files(root: Path, project: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / project).iterdir())}


def test_add_assigns_consecutive_ids_and_get_returns_them(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, second = decoded(["a", "b", "a"]), decoded(["b", "b"])
    r1, r2 = store.add("p", first), store.add("p", second, split="test")
    assert (r1.ids, r2.ids) == (range(3), range(3, 5))
    assert r2.split == "test" and r2.label_names == ("a", "b")
    images, labels = store.get("p", [4, 0, 2])
    assert images.dtype == np.uint8 and images.shape == (3, 3, 4, 4)
    assert np.array_equal(images, np.stack([second.images[1], first.images[0], first.images[2]]))
    assert labels.tolist() == [1, 0, 0]
    assert store.ids("p").tolist() == [0, 1, 2, 3, 4]
    assert store.ids("p", "test").tolist() == [3, 4]
    assert store.ids("p", "train").tolist() == [0, 1, 2]
    info = store.info("p")
    assert info.count == 5 and info.shape == InputShape(width=4, height=4, channels=3)
    assert info.counts == {"train": {"a": 2, "b": 1}, "test": {"b": 2}}
    assert info.ids == {"train": "0-2", "test": "3-4"}
    assert info.to_json()["train"] == 3
    manifest = store.manifest("p")
    assert manifest["sha256"] == list(first.sha256 + second.sha256)
    assert manifest["split"] == ["train"] * 3 + ["test"] * 2
    assert manifest["label"] == [0, 1, 0, 1, 1]


def test_labels_grow_stably(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add("p", decoded(["cat", "dog"]))
    second = store.add("p", decoded(["bird", "cat", "eel", "bird"]))
    assert second.label_names == ("cat", "dog", "bird", "eel")
    assert second.labels.tolist() == [2, 0, 3, 2]
    assert store.get("p", second.ids)[1].tolist() == [2, 0, 3, 2]
    assert Store(tmp_path).info("p").labels == ("cat", "dog", "bird", "eel")


def test_reopen_sees_the_same_data(tmp_path: Path) -> None:
    store = Store(tmp_path)
    upload = decoded(["x", "y"] * 5)
    store.add("one", upload)
    store.add("two", decoded(["z"], shape=(1, 2, 3)), split="test")
    again = Store(tmp_path)
    assert again.projects() == ["one", "two"]
    assert np.array_equal(again.get("one", range(10))[0], upload.images)
    assert again.info("two").shape == InputShape(width=3, height=2, channels=1)
    assert again.add("one", decoded(["x"])).ids == range(10, 11)


def test_unknown_projects_and_ids(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(UnknownProjectError, match="'nope'"):
        store.get("nope", [0])
    store.add("p", decoded(["a"] * 3))
    with pytest.raises(UnknownIdsError, match=r"has ids 0-2; 2 unknown id\(s\): 3,7") as caught:
        store.get("p", [0, 3, 7])
    assert caught.value.ids == (3, 7)
    with pytest.raises(UnknownIdsError):
        store.get("p", [-1])
    assert store.get("p", [])[0].shape == (0, 3, 4, 4)


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_bad_project_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(StoreError, match="project name"):
        Store(tmp_path).add(name, decoded(["a"]))


def test_shape_mismatch_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add("p", decoded(["a"]))
    before = files(tmp_path, "p")
    with pytest.raises(ShapeMismatchError, match="4x4x3"):
        store.add("p", decoded(["a"], shape=(1, 4, 4)))
    assert files(tmp_path, "p") == before


def test_delete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add("p", decoded(["a"]))
    store.delete("p")
    assert store.projects() == [] and not (tmp_path / "p").exists()
    with pytest.raises(UnknownProjectError):
        store.delete("p")
    assert Store(tmp_path).projects() == []


# -- atomicity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fail_at", ["images", "records", "manifest"])
def test_a_failed_add_leaves_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           fail_at: str) -> None:
    store = Store(tmp_path)
    kept = decoded(["a", "b"])
    store.add("p", kept)
    before = files(tmp_path, "p")
    real_append = _files.append

    def append(path: Path, offset: int, array: np.ndarray, *, fsync: bool) -> None:
        real_append(path, offset, array, fsync=fsync)  # the bytes land on disk, then it fails
        if path.name.startswith(fail_at):
            raise OSError(28, "No space left on device")

    def replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(_files, "append", append)
        if fail_at == "manifest":
            patch.setattr(_files.os, "replace", replace)
        with pytest.raises(StoreError, match="could not store the upload"):
            store.add("p", decoded(["c"] * 4))
    assert files(tmp_path, "p") == before
    assert store.info("p").count == 2 and store.info("p").labels == ("a", "b")
    assert Store(tmp_path).info("p").count == 2
    assert store.add("p", decoded(["c"])).ids == range(2, 3)


def test_a_failed_first_add_leaves_no_project(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)

    def replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_files.os, "replace", replace)
    with pytest.raises(StoreError):
        store.add("p", decoded(["a"]))
    monkeypatch.undo()
    assert store.projects() == [] and not (tmp_path / "p").exists()


CRASH = """
import os, sys, numpy as np
from mlitb.dataserver import Decoded, Store
from mlitb.dataserver import _files
images = np.full((5, 3, 4, 4), 7, np.uint8)
upload = Decoded(images=images, labels=np.zeros(5, np.uint32), label_names=("new",),
                 sha256=("00" * 32,) * 5, names=("new/x",) * 5)
_files.os.replace = lambda src, dst: os._exit(9)  # the process dies just before the commit
Store(sys.argv[1]).add("p", upload)
"""


def test_a_crash_mid_add_is_cut_off_on_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path)
    kept = decoded(["a", "b", "a"])
    store.add("p", kept)
    before = files(tmp_path, "p")
    done = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], timeout=60, check=False)
    assert done.returncode == 9
    assert (tmp_path / "p" / "manifest.json.tmp").exists()
    assert (tmp_path / "p" / "images.u8").stat().st_size > len(before["images.u8"])
    again = Store(tmp_path)
    assert files(tmp_path, "p") == before
    assert again.info("p").labels == ("a", "b") and again.info("p").count == 3
    assert np.array_equal(again.get("p", [0, 1, 2])[0], kept.images)


def test_a_damaged_store_is_reported(tmp_path: Path) -> None:
    Store(tmp_path).add("p", decoded(["a", "b"]))
    os.truncate(tmp_path / "p" / "images.u8", 10)
    with pytest.raises(StoreError, match="damaged"):
        Store(tmp_path)
    (tmp_path / "p" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="not a version 1"):
        Store(tmp_path)


# -- properties ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=6), min_size=1,
                max_size=6))
def test_any_sequence_of_uploads(tmp_path: Path, uploads: list[list[str]]) -> None:
    root = tmp_path / f"s{rng.integers(1 << 60)}"
    store = Store(root, fsync=False)
    seen: list[str] = []
    expected: list[str] = []
    for labels in uploads:
        registration = store.add("p", decoded(labels))
        for label in sorted(set(labels)):
            if label not in seen:
                seen.append(label)
        assert registration.label_names == tuple(seen)  # old labels keep their index
        expected += labels
    reopened = Store(root)
    names = reopened.info("p").labels
    got = reopened.get("p", range(len(expected)))[1]
    assert [names[i] for i in got] == expected
