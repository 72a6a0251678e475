"""Error feedback: what a worker's compressed results lost is sent with its next result.

A project with ``training.wire`` ``float16`` or ``int8`` has its trainers encode each result
(gradient sum or parameter delta) lossily. Each worker keeps the residual, the true vector minus
what the master will decode, and adds it to its next result before encoding (Seide et al. 2014;
Karimireddy et al. 2019, "EF-SGD"), so nothing is lost for good: after k results the sum of what
was sent is the sum of the true vectors minus the last residual, which is at most one encoding's
error. The browser's trainer does the same (``mlitb/browser/trainer.js``).

The residual belongs to one worker's stream of results on one project: it is dropped when the
stream breaks, i.e. on a new connection (another worker id), another parameter count, and
when a result is for a parameter version more than one past the last (rounds were missed, so
the residual is older than the model the master has moved to). Results with nothing computed
(0 samples, a zero vector) are sent as they are and leave the residual alone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..protocol import Encoded, Encoding, encode_vector


class ErrorFeedback:
    """One worker's residual and the version of its last result."""

    def __init__(self) -> None:
        self.residual: npt.NDArray[np.float32] | None = None
        self.version: int | None = None

    def reset(self) -> None:
        self.residual, self.version = None, None

    def encode(self, vector: npt.NDArray[np.float32], encoding: Encoding, *,
               parameter_version: int) -> Encoded:
        """``vector`` plus the residual, encoded; the residual becomes what this encoding lost.
        float32 loses nothing: the vector as it is, no residual kept."""
        array = np.ascontiguousarray(vector, dtype=np.float32)
        if encoding is Encoding.FLOAT32:
            self.reset()
            return encode_vector(array, encoding)
        residual = self.residual
        last = self.version
        if residual is None or residual.size != array.size or \
                (last is not None and not last <= parameter_version <= last + 1):
            residual = None
        corrected = array + residual if residual is not None else array.copy()
        encoded = encode_vector(corrected, encoding)
        with np.errstate(invalid="ignore", over="ignore"):
            left = corrected - encoded.decoded
        # A non-finite result is refused by the master; it must not poison the next ones.
        self.residual = left if np.isfinite(left).all() else None
        self.version = parameter_version
        return encoded
