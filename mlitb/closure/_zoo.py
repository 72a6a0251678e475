"""The model zoo: a directory of research closures to keep, share and start projects from.

Each entry is one verified closure file, ``NAME.closure.json``, where NAME is a project name
(the closure's own, or one given when adding it), so starting a project from an entry
(``create_project`` with the closure) can use it as is. Entries are added atomically, only after
every check of ``load_closure`` passed, and never twice (by name or by content).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .._files import atomic_write
from ..errors import ClosureError
from ._convert import Closure, closure_from_dict, load_closure, parse_closure_json, save_closure

SUFFIX: Final = ".closure.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, eq=False)
class ZooEntry:
    """One file of the zoo: its closure, or why it could not be read."""

    name: str
    path: Path
    closure: Closure | None
    error: str | None = None


class Zoo:
    """The zoo in directory ``root`` (created when the first entry is added)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{name}{SUFFIX}"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[:-len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}")
                      if not p.name.startswith("."))

    def entries(self) -> list[ZooEntry]:
        """Every entry, each checked; unreadable ones carry their error."""
        out = []
        for name in self.names():
            path = self.path(name)
            try:
                out.append(ZooEntry(name, path, load_closure(path)))
            except (ClosureError, OSError) as exc:
                out.append(ZooEntry(name, path, None, str(exc)))
        return out

    def get(self, name: str) -> Closure:
        """The closure of entry ``name`` (checked), or ClosureError."""
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ClosureError(f"the zoo at {self.root} has no entry {name!r} (entries: {known})")
        return load_closure(path)

    def add(self, source: str | os.PathLike[str], name: str | None = None) -> ZooEntry:
        """Verify the closure file ``source`` and add it as ``name`` (default: its own name).
        Raises ClosureError if it fails a check, the name is taken, or the same closure is in
        the zoo already."""
        source = Path(source)
        raw = source.read_bytes()
        try:
            closure = closure_from_dict(parse_closure_json(raw))
        except ClosureError as exc:
            raise ClosureError(f"{source}: {exc}") from None
        name = name or closure.name
        if not _NAME.fullmatch(name):
            raise ClosureError(f"zoo entry name {name!r}: must be 1-64 characters from "
                               "A-Z a-z 0-9 _ . - starting with a letter or digit")
        if self.path(name).exists():
            raise ClosureError(f"the zoo has an entry named {name!r} already "
                               f"({self.path(name)}): give another --name, or remove it first")
        digest = closure.content_sha256()
        for entry in self.entries():
            if entry.closure is not None and entry.closure.content_sha256() == digest:
                raise ClosureError(f"{source} is in the zoo already, as {entry.name!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        if name == closure.name:
            atomic_write(self.path(name), raw)  # the file as it was verified, byte for byte
        else:
            closure = closure.replace(name=name)
            save_closure(closure, self.path(name))
        return ZooEntry(name, self.path(name), closure)

    def remove(self, name: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ClosureError(f"the zoo at {self.root} has no entry {name!r} (entries: {known})")
        path.unlink()
        return path


