"""Who may join a project and who may add data to it: per-project tokens, kept hashed.

A project is open (the paper's default: anyone may train, track or run stats) unless it has a
join token; only the operator adds data unless the project has a contributor token. The master
keeps SHA-256 hashes of these tokens, never the tokens: in memory, and (with ``ProjectFiles``) in
``DATA_DIR/projects/access.json`` so they survive a restart. Closures never contain them.
Checks compare hashes with ``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_write
from .._tokens import matches as _matches
from .._tokens import token_hash

log = logging.getLogger("mlitb.master")

ACCESS_FILE = "access.json"




@dataclass(frozen=True)
class Access:
    """One project's token hashes (None: no such token)."""

    join_hash: str | None = None
    contributor_hash: str | None = None

    @classmethod
    def from_tokens(cls, join_token: str | None, contributor_token: str | None) -> Access:
        return cls(join_hash=token_hash(join_token) if join_token else None,
                   contributor_hash=token_hash(contributor_token) if contributor_token else None)

    @property
    def open(self) -> bool:
        return self.join_hash is None

    def may_join(self, join_token: str | None) -> bool:
        return _matches(join_token, self.join_hash)

    def may_contribute(self, token: str | None) -> bool:
        return self.contributor_hash is not None and token is not None and \
            _matches(token, self.contributor_hash)


class AccessTable:
    """Every project's ``Access``; persisted (hashes only) under ``root`` when given."""

    def __init__(self, root: Path | None = None) -> None:
        self.path = root / ACCESS_FILE if root is not None else None
        self._table: dict[str, Access] = {}
        if self.path is not None and self.path.is_file():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                for name, entry in raw.get("projects", {}).items():
                    self._table[name] = Access(join_hash=entry.get("join_sha256"),
                                               contributor_hash=entry.get("contributor_sha256"))
            except (OSError, ValueError, AttributeError) as exc:
                # Fail closed is not possible without the hashes: say so loudly.
                log.error("could not read %s (%s): every project is open until the operator "
                          "sets its tokens again", self.path, exc)

    def get(self, name: str) -> Access:
        return self._table.get(name, Access())

    def set(self, name: str, access: Access) -> None:
        if access == Access():
            self._table.pop(name, None)
        else:
            self._table[name] = access
        self._save()

    def remove(self, name: str) -> None:
        if self._table.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        body = {"projects": {
            name: {k: v for k, v in (("join_sha256", a.join_hash),
                                     ("contributor_sha256", a.contributor_hash)) if v}
            for name, a in sorted(self._table.items())}}
        atomic_write(self.path, json.dumps(body, indent=1) + "\n")
        try:
            self.path.chmod(0o600)
        except OSError:
            pass
