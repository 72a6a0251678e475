"""TLS contexts: the master's (``--certfile/--keyfile``) and the clients' (``--cafile``).

Clients verify the server's certificate against the system's CAs, or against ``cafile`` (PEM)
when given (``--cafile`` or ``MLITB_CAFILE``): a self-signed deployment hands its CA to nodes,
the CLI and the console. Contexts are not picklable: worker processes get the file name.
"""

from __future__ import annotations

import os
import ssl

from .errors import MlitbError


def cafile_or_env(cafile: str | os.PathLike[str] | None) -> str | None:
    """``cafile``, else ``MLITB_CAFILE``, else None (the system's CAs)."""
    if cafile is not None:
        return os.fspath(cafile)
    return os.environ.get("MLITB_CAFILE") or None


def client_context(cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A verifying client context (``cafile`` or ``MLITB_CAFILE`` adds a CA to trust)."""
    path = cafile_or_env(cafile)
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise MlitbError(f"cannot load the CA file {path}: {exc}") from None


def server_context(certfile: str | os.PathLike[str],
                   keyfile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The master's context: the certificate chain in ``certfile`` (PEM) and its key in
    ``keyfile`` (default: in ``certfile``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise MlitbError(f"cannot load the certificate {certfile}"
                         + (f" / key {keyfile}" if keyfile else "") + f": {exc}") from None
    return context
