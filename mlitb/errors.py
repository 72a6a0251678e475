"""The exception tree of mlitb.

Every error the project raises on purpose is an ``MlitbError``; the CLI turns them into one clear
line and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class MlitbError(Exception):
    """Root of every error mlitb raises on purpose."""


class ModelFormatError(MlitbError):
    """A network spec or model file is malformed or inconsistent.

    The message names the layer (by index and type) and the field that is wrong.
    """


class ProtocolError(MlitbError):
    """A message on the wire is malformed, of an unknown type or version, or out of bounds."""


class AuthError(MlitbError):
    """An action needs a credential (the operator token) that was missing or wrong."""


class UploadError(MlitbError):
    """An uploaded dataset archive was refused; nothing of it was stored."""


class ClosureError(MlitbError):
    """A research closure is malformed, of an unsupported version, or fails its hash checks."""


class OptimizerError(MlitbError):
    """An optimizer was configured with unknown names or out-of-range hyperparameters."""


class MasterUnreachableError(MlitbError):
    """The master could not be reached at the URL given (nothing listens, or not a master), or
    the connection to it was lost."""
