"""mlitb: Machine Learning in the Browser, rebuilt in Python.

The core (``mlitb.nn``, ``mlitb.optim``) has no I/O; servers, nodes, the console and the browser
client are built around it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    AuthError,
    ClosureError,
    MlitbError,
    ModelFormatError,
    OptimizerError,
    ProtocolError,
    UploadError,
)

try:
    __version__ = version("mlitb")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AuthError",
    "ClosureError",
    "MlitbError",
    "ModelFormatError",
    "OptimizerError",
    "ProtocolError",
    "UploadError",
    "__version__",
]
