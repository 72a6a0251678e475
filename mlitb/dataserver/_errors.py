"""The data server's errors: all ``MlitbError``s, so the CLI prints them as one line.

``UploadError`` (an archive was refused) lives in ``mlitb.errors``; these are the store's.
"""

from __future__ import annotations

from mlitb.errors import MlitbError


class StoreError(MlitbError):
    """The data store refused a request (a bad project name, a full id space, a label list over its
    limit) or could not write or read its files; the message names the project and the cause."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or refused to write (a Redis store: a connection error,
    a full Redis); the data server answers 500."""


class UnknownProjectError(StoreError):
    """No dataset is stored under this project name."""


class UnknownIdsError(StoreError):
    """A request named data ids the project does not have; ``ids`` holds up to 10 of them."""

    def __init__(self, message: str, ids: tuple[int, ...]) -> None:
        super().__init__(message)
        self.ids = ids


class ShapeMismatchError(StoreError):
    """An upload's input shape differs from the shape the project's dataset already has."""


class LabelConflictError(StoreError):
    """An upload's labels cannot be given the indices the project's model uses for them (the
    store's label list is not a prefix of the model's); refused before anything is stored."""


class ProjectDeletedError(StoreError):
    """The project was deleted while an upload to it was being read or decoded."""


class DataServerError(MlitbError):
    """``DataClient``: the data server answered with an error status; ``status`` is the HTTP status
    and the message is the server's own (``{"error": ...}``)."""

    def __init__(self, message: str, status: int, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail if detail is not None else message
        """The server's own words, without the request line."""
