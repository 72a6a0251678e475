"""A store in Redis (``--store redis://HOST:PORT/DB``) that several data servers share.

Keys (all under ``mlitb:``; docs/dataserver.md describes the same)::

    mlitb:store-id                 this store's identity (set once, by the first data server)
    mlitb:projects                 set: the projects with committed data
    mlitb:p:NAME:manifest          the commit point: the directory store's manifest plus
                                   "segments" [[first id, count, key], ...] and "incarnation"
    mlitb:p:NAME:records           37 bytes per id, as records.bin: label, split, sha256
    mlitb:p:NAME:generation        how many times the project was deleted
    mlitb:seg:HEX                  hash: one upload's images, field = row offset in the upload

An upload is written in two steps. First its images go to a new segment key that expires
(``STAGING_TTL``): nothing refers to it yet, so no reader sees it, and a data server that dies
here leaves nothing behind for long. Then one optimistic transaction (WATCH the manifest and
the generation, MULTI ... EXEC) checks the upload against the committed manifest, appends its
records, writes the new manifest and makes the segment permanent; if another data server
committed meanwhile, EXEC fails and the check runs again on the new manifest. Readers take the
manifest first and only read ids it counts, so a dataset is seen before or after an upload,
never half of it. Committed records are never rewritten, so each process keeps a copy of them
(per incarnation) and fetches only the tail it has not seen.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis
from redis.exceptions import RedisError, WatchError

from ._backend import check_store_url, redact
from ._errors import (
    ProjectDeletedError,
    StoreError,
    StoreUnavailableError,
    UnknownIdsError,
    UnknownProjectError,
)
from ._files import RECORD
from ._ids import format_ids
from ._ingest import Decoded, InputShape
from ._plan import manifest_shape, plan_upload
from ._store import (SPLITS, DatasetInfo, Registration, Split, check_project_name,
                     check_addition)

log = logging.getLogger(__name__)

PREFIX: Final = "mlitb:"
STAGING_TTL: Final = 3600
"""Seconds an upload's images live before their commit makes them permanent."""
WRITE_CHUNK_BYTES: Final = 8 << 20
"""Images per HSET command: about this many bytes (at least one image)."""
MAX_COMMIT_TRIES: Final = 100


class RedisStore:
    """Datasets of many projects in one Redis database; safe to share between threads and
    between data servers (processes, machines)."""

    def __init__(self, url: str, *, tmp_dir: Path | None = None) -> None:
        check_store_url(url)
        self.url = redact(url)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="mlitb-spool-", dir=tmp_dir))
        weakref.finalize(self, shutil.rmtree, self.tmp_dir, True)  # spools of this process
        self._redis = redis.Redis.from_url(url, socket_timeout=60, socket_connect_timeout=10,
                                           health_check_interval=30)
        self._lock = threading.Lock()
        self._records: dict[str, tuple[str, npt.NDArray[Any]]] = {}  # by project
        # The store's name for register_data_server: made once, by whoever comes first.
        self.identity: str | None = self._call(self._identity)

    def _identity(self) -> str:
        key = PREFIX + "store-id"
        self._redis.set(key, f"redis-{uuid.uuid4().hex[:16]}", nx=True)
        value = self._redis.get(key)
        assert value is not None
        return value.decode("ascii") if isinstance(value, bytes) else str(value)

    def _call(self, work: Any, *args: Any) -> Any:
        """``work(*args)`` with Redis failures as one-line ``StoreError``."""
        try:
            return work(*args)
        except RedisError as exc:
            raise StoreUnavailableError(f"the Redis store {self.url}: {_describe(exc)}") \
                from None

    def close(self) -> None:
        self._redis.close()

    # -- keys -------------------------------------------------------------------------------------
    @staticmethod
    def _key(project: str, what: str) -> str:
        return f"{PREFIX}p:{project}:{what}"

    def _manifest(self, project: str, client: Any = None) -> dict[str, Any] | None:
        raw = (client or self._redis).get(self._key(project, "manifest"))
        return None if raw is None else dict(json.loads(raw))

    def _committed(self, project: str) -> dict[str, Any]:
        check_project_name(project)
        manifest: dict[str, Any] | None = self._call(self._manifest, project)
        if manifest is None:
            raise UnknownProjectError(f"project {project!r}: no data has been uploaded")
        return manifest

    def _records_of(self, project: str, manifest: dict[str, Any]) -> npt.NDArray[Any]:
        """The committed records of ``manifest`` (cached; only the unseen tail is fetched)."""
        incarnation, count = str(manifest["incarnation"]), int(manifest["count"])
        with self._lock:
            known = self._records.get(project)
        have = known[1] if known is not None and known[0] == incarnation else \
            np.empty(0, dtype=RECORD)
        if len(have) < count:
            size = RECORD.itemsize
            tail = self._call(self._redis.getrange, self._key(project, "records"),
                              len(have) * size, count * size - 1)
            if len(tail) != (count - len(have)) * size:  # deleted (and maybe renewed) meanwhile
                raise UnknownProjectError(f"project {project!r} was deleted while it was read")
            have = np.concatenate([have, np.frombuffer(tail, dtype=RECORD)])
            with self._lock:
                self._records[project] = (incarnation, have)
        return have[:count]

    # -- reading --------------------------------------------------------------------------------
    def projects(self) -> list[str]:
        names = self._call(self._redis.smembers, PREFIX + "projects")
        return sorted(bytes(n).decode("utf-8") for n in names)

    def shape(self, project: str) -> InputShape | None:
        check_project_name(project)
        manifest = self._call(self._manifest, project)
        return None if manifest is None else manifest_shape(manifest)

    def get(self, project: str, ids: Sequence[int] | npt.NDArray[np.integer]
            ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
        manifest = self._committed(project)
        count, shape = int(manifest["count"]), manifest_shape(manifest)
        index = np.asarray(ids, dtype=np.int64).reshape(-1)
        unknown = index[(index < 0) | (index >= count)]
        if unknown.size:
            shown = tuple(int(i) for i in unknown[:10])
            raise UnknownIdsError(f"project {project!r} has ids 0-{count - 1}; "
                                  f"{unknown.size} unknown id(s): {format_ids(shown)}", shown)
        labels = self._records_of(project, manifest)["label"][index].astype(np.uint32)
        segments = manifest["segments"]
        firsts = np.array([first for first, _, _ in segments], dtype=np.int64)
        which = np.searchsorted(firsts, index, side="right") - 1
        rows: list[bytes | None] = [None] * index.size
        pipe = self._redis.pipeline(transaction=False)
        asked = []
        for s in np.unique(which).tolist():
            positions = np.flatnonzero(which == s)
            first, _, key = segments[s]
            pipe.hmget(key, [str(int(i) - first) for i in index[positions]])
            asked.append(positions)
        for positions, values in zip(asked, self._call(pipe.execute)):
            for p, value in zip(positions.tolist(), values):
                rows[p] = value
        if any(row is None for row in rows):
            raise UnknownProjectError(f"project {project!r} was deleted while it was read")
        images = np.frombuffer(b"".join(rows), dtype=np.uint8)  # type: ignore[arg-type]
        return images.reshape(index.size, *shape.array_shape), labels

    def ids(self, project: str, split: Split | None = None) -> npt.NDArray[np.int64]:
        manifest = self._committed(project)
        return _ids(self._records_of(project, manifest), split)

    def info(self, project: str) -> DatasetInfo:
        manifest = self._committed(project)
        return _info(project, manifest, self._records_of(project, manifest))

    def manifest(self, project: str) -> dict[str, Any]:
        manifest = self._committed(project)
        records = self._records_of(project, manifest)
        hashes = records["sha256"].tobytes().hex()
        return {**_info(project, manifest, records).to_json(),
                "label": records["label"].tolist(),
                "split": [SPLITS[s] for s in records["split"].tolist()],
                "sha256": [hashes[i:i + 64] for i in range(0, len(hashes), 64)]}

    def labels_with(self, project: str, names: Sequence[str]) -> tuple[str, ...]:
        check_project_name(project)
        manifest = self._call(self._manifest, project)
        labels: tuple[str, ...] = () if manifest is None else tuple(manifest["labels"])
        return labels + tuple(name for name in names if name not in labels)

    def generation(self, project: str) -> int:
        check_project_name(project)
        return int(self._call(self._redis.get, self._key(project, "generation")) or 0)

    # -- writing --------------------------------------------------------------------------------
    def add(self, project: str, decoded: Decoded, split: Split = "train", *,
            labels: Sequence[str] | None = None, generation: int | None = None
            ) -> Registration:
        """Append a decoded upload as new ids; all of it is committed, or none of it (see the
        module's docstring). The checks are the directory store's (``plan_upload``)."""
        check_addition(project, split, decoded)
        n = len(decoded)
        plan_upload(project, self._call(self._manifest, project), decoded, split, labels)
        segment = f"{PREFIX}seg:{uuid.uuid4().hex}"
        try:
            self._call(self._stage, segment, decoded.images)
            first, plan = self._call(self._commit, project, segment, decoded, split, labels,
                                     generation)
        except BaseException:
            try:
                self._redis.unlink(segment)
            except RedisError:
                pass  # it expires by itself
            raise
        registered = plan.records["label"].copy()
        registered.flags.writeable = False
        return Registration(project=project, split=split, ids=range(first, first + n),
                            labels=registered, label_names=plan.labels)

    def _stage(self, segment: str, images: npt.NDArray[np.uint8]) -> None:
        row_bytes = max(1, int(np.prod(images.shape[1:])))
        per_command = max(1, WRITE_CHUNK_BYTES // row_bytes)
        flat = np.ascontiguousarray(images).reshape(len(images), -1)
        for start in range(0, len(images), per_command):
            rows = flat[start:start + per_command]
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(segment, mapping={str(start + k): row.tobytes()
                                        for k, row in enumerate(rows)})
            pipe.expire(segment, STAGING_TTL)
            pipe.execute()

    def _commit(self, project: str, segment: str, decoded: Decoded, split: str,
                labels: Sequence[str] | None, generation: int | None) -> tuple[int, Any]:
        keys = [self._key(project, k) for k in ("manifest", "records", "generation")]
        with self._redis.pipeline() as pipe:
            for _ in range(MAX_COMMIT_TRIES):
                try:
                    pipe.watch(keys[0], keys[2])  # type: ignore[no-untyped-call]
                    current = int(pipe.get(keys[2]) or 0)
                    if generation is not None and generation != current:
                        raise ProjectDeletedError(f"project {project!r} was deleted while "
                                                  "this upload was being read; nothing was "
                                                  "stored")
                    old = self._manifest(project, pipe)
                    plan = plan_upload(project, old, decoded, split, labels)
                    manifest = {**plan.manifest,
                                "segments": [*(old["segments"] if old else []),
                                             [plan.first, len(decoded), segment]],
                                "incarnation": old["incarnation"] if old else
                                uuid.uuid4().hex}
                    pipe.multi()
                    if old is None:
                        pipe.set(keys[1], plan.records.tobytes())
                    else:
                        pipe.setrange(keys[1], plan.first * RECORD.itemsize,
                                      plan.records.tobytes())
                    pipe.set(keys[0], json.dumps(manifest, separators=(",", ":")))
                    pipe.persist(segment)
                    pipe.sadd(PREFIX + "projects", project)
                    pipe.execute()
                    return plan.first, plan
                except WatchError:
                    continue  # another data server committed first: check again
        raise StoreError(f"project {project!r}: {MAX_COMMIT_TRIES} commits in a row lost to "
                         "other data servers; nothing was stored")

    def delete(self, project: str) -> None:
        """Forget the project and its data (readers holding ids see them vanish)."""
        check_project_name(project)
        self._call(self._delete, project)
        with self._lock:
            self._records.pop(project, None)

    def _delete(self, project: str) -> None:
        keys = [self._key(project, k) for k in ("manifest", "records", "generation")]
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys[0])  # type: ignore[no-untyped-call]
                    manifest = self._manifest(project, pipe)
                    if manifest is None:
                        raise UnknownProjectError(f"project {project!r}: no data has been "
                                                  "uploaded")
                    pipe.multi()
                    pipe.unlink(keys[0], keys[1], *(key for _, _, key in manifest["segments"]))
                    pipe.srem(PREFIX + "projects", project)
                    pipe.incr(keys[2])
                    pipe.execute()
                    return
                except WatchError:
                    continue


def _describe(exc: RedisError) -> str:
    """One printable line: redis-py's pipeline errors quote the command, images and all."""
    text = str(exc)
    if "caused error: " in text:
        text = text.split("caused error: ", 1)[1]
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return f"{type(exc).__name__}: {text[:300]}"


def _ids(records: npt.NDArray[Any], split: Split | None) -> npt.NDArray[np.int64]:
    if split is None:
        return np.arange(len(records), dtype=np.int64)
    return np.flatnonzero(records["split"] == SPLITS.index(split)).astype(np.int64)


def _info(project: str, manifest: dict[str, Any], records: npt.NDArray[Any]) -> DatasetInfo:
    counts = {split: dict(c) for split, c in manifest["counts"].items()}
    return DatasetInfo(project=project, shape=manifest_shape(manifest),
                       labels=tuple(manifest["labels"]), count=int(manifest["count"]),
                       counts=counts,
                       ids={split: format_ids(_ids(records, split)) for split in SPLITS})
