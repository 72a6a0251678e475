"""Checking a closure's data manifest against data on disk."""

from __future__ import annotations

import os
from typing import Literal

from ..errors import ClosureError
from ._convert import Closure
from ._manifest import ManifestMatch, match_manifest, split_from_zip


def verify_manifest(closure: Closure, zip_path: str | os.PathLike[str],
                    split: Literal["train", "test", "all"] | None = None) -> ManifestMatch:
    """Check that an upload-format zip holds exactly the data of the closure's manifest: the
    same images (by the SHA-256 of their file bytes) with the same labels, in any order.

    ``split``: compare with the training data, the test data, or ``all`` of it; ``None`` accepts
    whichever matches. Returns what matched; raises ``ClosureError`` naming the differences
    (images missing, extra, or labelled differently, with an example of each), ``UploadError``
    for an archive the data server would refuse, ``OSError`` if it cannot be read.
    """
    if closure.data is None:
        raise ClosureError("data: the closure has no data manifest to compare with")
    return match_manifest(closure.data, split_from_zip(zip_path), split)
