"""Where a master keeps its projects across restarts: one research closure per project.

``ProjectFiles(DATA_DIR / "projects")`` holds ``NAME.closure.json`` for every project. The master
writes a project's closure every N iterations, when its settings change and when it shuts down
(``save_closure``: temporary file, fsync, rename, so a reader, or a master restarted after a
``kill -9``, sees the previous closure or the new one, never a part), removes it when the project is
deleted, and recreates every project from these files when it starts again. The calls here are
plain blocking file I/O; the master runs them in a thread.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .._files import atomic_write
from ..closure import Closure, closure_from_dict, closure_to_dict, load_closure
from ..closure._convert import parse_closure_json
from ..errors import ClosureError

log = logging.getLogger("mlitb.master")

SUFFIX: Final = ".closure.json"


@dataclass(frozen=True)
class Unreadable:
    """A project file that could not be read at start-up; it was renamed to ``moved_to``."""

    path: Path
    reason: str
    moved_to: Path | None


class ProjectFiles:
    """The directory of a master's project closures (created if needed)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        """The closure file of project ``name`` (names are safe file names, see the protocol)."""
        return self.root / f"{name}{SUFFIX}"

    def names(self) -> list[str]:
        return sorted(p.name[:-len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}")
                      if not p.name.startswith("."))

    def save(self, closure: Closure) -> Path:
        """Write the closure of ``closure.name`` atomically, after reading the text back as
        ``load_closure`` will: a closure that could not be restored is never written (the
        ``ClosureError`` says why; the previous file stays)."""
        text = json.dumps(closure_to_dict(closure), indent=1, ensure_ascii=False,
                          allow_nan=False)
        try:
            closure_from_dict(parse_closure_json(text))
        except ClosureError as exc:
            raise ClosureError(f"not written, it could not be read back: {exc}") from None
        return atomic_write(self.path(closure.name), text + "\n")

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def load_all(self) -> tuple[list[Closure], list[Unreadable]]:
        """Every readable closure, and the files that were not (each renamed aside to
        ``NAME.closure.json.unreadable-TIME`` so a new project of that name cannot overwrite
        it). A closure whose ``name`` differs from its file name is loaded under the file name."""
        closures: list[Closure] = []
        problems: list[Unreadable] = []
        for name in self.names():
            path = self.path(name)
            try:
                closure = load_closure(path)
            except (ClosureError, OSError) as exc:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                moved: Path | None = path.with_name(f"{path.name}.unreadable-{stamp}")
                try:
                    os.replace(path, moved)  # type: ignore[arg-type]
                except OSError:
                    moved = None
                problems.append(Unreadable(path, str(exc), moved))
                log.error("cannot restore %s: %s", path, exc)
                continue
            if closure.name != name:
                closure = closure.replace(name=name)
            closures.append(closure)
        return closures, problems
