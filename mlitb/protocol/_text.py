"""Control messages as JSON text frames: ``encode_text``, ``decode_text`` and who may send what."""

from __future__ import annotations

import json
from typing import Any, NoReturn, cast

from ._errors import WireError
from ._limits import MAX_LARGE_TEXT_FRAME, MAX_TEXT_FRAME, PROTOCOL_VERSION, CloseCode, Role
from ._messages import MESSAGE_TYPES, Hello, Message, RequestId
from ._schema import Invalid, converter


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, exactly when it matters for ``limit``, cheaply otherwise."""
    if len(text) > limit or len(text) * 4 <= limit or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _too_large(size: int, limit: int, what: str) -> WireError:
    return WireError(f"{what}: text frame of {size} bytes is over the limit of {limit} bytes",
                     code="too_large", close_code=CloseCode.MESSAGE_TOO_BIG, message_type=what)


def _request_id(obj: dict[str, Any]) -> str | None:
    """The request id of a message being refused, if it carries a valid one (to echo it)."""
    try:
        return cast(str, converter(RequestId, True)(obj.get("request_id")))
    except Invalid:
        return None


def _check_version(obj: dict[str, Any]) -> None:
    """Checked before anything else in a hello, so a hello of any version gets this answer."""
    version = obj.get("protocol")
    if "protocol" not in obj:
        raise WireError("hello.protocol: missing required field (the protocol version)",
                        message_type="hello", field="protocol")
    if type(version) is not int:
        raise WireError(f"hello.protocol: must be an integer, got {version!r:.40}",
                        message_type="hello", field="protocol")
    if version != PROTOCOL_VERSION:
        raise WireError(
            f"hello.protocol: protocol version mismatch: the client speaks version {version}, "
            f"the master speaks version {PROTOCOL_VERSION}; use the same mlitb release on both "
            f"sides (reload the page, or upgrade the node)",
            code="version_mismatch", close_code=CloseCode.VERSION_MISMATCH,
            message_type="hello", field="protocol",
        )


def decode_text(text: str, *, max_size: int = MAX_TEXT_FRAME) -> Message:
    """Parse and validate one text frame into its message dataclass.

    ``max_size`` caps the frame before parsing: keep the default for anything a master receives
    from a connection that is not an authorized operator; use ``MAX_LARGE_TEXT_FRAME`` for frames
    from authorized operators and from the master. Types not marked ``LARGE`` are held to
    ``MAX_TEXT_FRAME`` whatever ``max_size`` says. Unknown fields are refused, as are unknown types.
    Raises ``WireError`` (a ``ProtocolError``) naming the message type and field.
    """
    if not isinstance(text, str):
        raise WireError(f"a control message must be a text frame (str), got {type(text).__name__}")
    size = _utf8_size(text, max_size)
    if size > max_size:
        raise _too_large(size, max_size, "message")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise WireError(f"message: not valid JSON ({str(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise WireError("message: must be a JSON object with a 'type' field")
    request_id = _request_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise WireError("message.type: missing, or not a string", field="type",
                        request_id=request_id)
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise WireError(f"message.type: unknown message type {kind!r:.60}", field="type",
                        request_id=request_id)
    if cls is Hello:
        _check_version(obj)
    if not cls.LARGE and size > MAX_TEXT_FRAME:
        raise _too_large(size, MAX_TEXT_FRAME, kind)
    del obj["type"]
    try:
        message: Message = converter(cls, True)(obj)
    except Invalid as e:
        raise WireError(f"{kind}.{e.where()}: {e.reason}", message_type=kind,
                        field=e.where(), request_id=request_id) from None
    return message


def encode_text(message: Message) -> str:
    """Validate ``message`` and serialise it as compact ASCII JSON with its ``type`` first."""
    cls = type(message)
    kind = getattr(cls, "TYPE", None)
    if not isinstance(kind, str) or MESSAGE_TYPES.get(kind) is not cls:
        raise WireError(f"not a protocol message: {cls.__name__}")
    try:
        body = converter(cls, False)(message)
    except Invalid as e:
        raise WireError(f"{kind}.{e.where()}: {e.reason}", message_type=kind,
                        field=e.where()) from None
    text = json.dumps({"type": kind, **body}, separators=(",", ":"), allow_nan=False)
    limit = MAX_LARGE_TEXT_FRAME if cls.LARGE else MAX_TEXT_FRAME
    if len(text) > limit:
        raise _too_large(len(text), limit, kind)
    return text


def check_sender(message: Message, role: Role, *, authorized: bool) -> None:
    """Refuse ``message`` from a client of ``role`` unless that role may send it; operator actions
    also need ``authorized`` (the hello's token was accepted). Raises ``WireError`` with code
    ``forbidden``. (Whether a hello may come now is the connection's state, not checked here.)"""
    cls = type(message)
    request_id = getattr(message, "request_id", None)
    if "master" in cls.FROM:
        raise WireError(f"{cls.TYPE}: only the master sends this message", code="forbidden",
                        message_type=cls.TYPE, request_id=request_id)
    if role not in cls.FROM:
        raise WireError(f"{cls.TYPE}: a client of role {role!r} may not send this message",
                        code="forbidden", message_type=cls.TYPE, request_id=request_id)
    if cls.TOKEN and not authorized:
        raise WireError(f"{cls.TYPE}: needs the operator token in the hello", code="forbidden",
                        message_type=cls.TYPE, request_id=request_id)
