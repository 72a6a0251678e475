"""Control messages as JSON text frames: ``encode_text``, ``decode_text`` and who may send what.

msgspec parses and checks a frame in one pass into the message's wire struct (a tagged union on
``type``, ``_schema.wire_struct``), then builds the message dataclass. Only a frame it refuses
takes the slow path: ``json.loads`` and the checks in the order peers rely on (JSON, object,
``type``, a hello's version, the size of a small type, then the fields), so the error names the
message type and field as it always did.
"""

from __future__ import annotations

import json
import numbers
import typing
from typing import Any, NoReturn

import msgspec

from ._errors import WireError
from ._limits import (
    MAX_JSON_DEPTH,
    MAX_LARGE_TEXT_FRAME,
    MAX_TEXT_FRAME,
    PROTOCOL_VERSION,
    CloseCode,
    Role,
)
from ._messages import MESSAGE_TYPES, Hello, Message, RequestId
from ._schema import Invalid, explain, from_wire, to_wire, wire_struct, wire_type

_CLASS_OF: dict[type, type[Message]] = {wire_struct(cls): cls for cls in MESSAGE_TYPES.values()}
_DECODER = msgspec.json.Decoder(typing.Union[tuple(_CLASS_OF)])
_LARGE_DECODER = msgspec.json.Decoder(
    typing.Union[tuple(s for s, cls in _CLASS_OF.items() if cls.LARGE)])
"""For frames over MAX_TEXT_FRAME: only the large types may be that big."""
_REQUEST_ID = wire_type(RequestId)


def _plain_value(value: Any) -> Any:
    """msgspec's ``enc_hook``: str subclasses, numpy numbers (in free-form JSON; checked finite
    before)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise NotImplementedError(f"no JSON form for {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_plain_value)


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
        return typing.cast(str, msgspec.convert(obj.get("request_id"), _REQUEST_ID))
    except msgspec.ValidationError:
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


def _surrogate(value: Any, *path: str) -> Invalid | None:
    """Where ``value`` holds a string with a lone surrogate (msgspec refuses those), if it does."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Invalid("must be valid Unicode (no lone surrogates)", *path)
        return None
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, (list, tuple)) else ())
    for key, item in items:
        found = (_surrogate(key, *path) if isinstance(key, str) else None) or _surrogate(
            item, *path, f"[{key}]" if isinstance(key, int) else key)
        if found is not None:
            return found
    return None


def _field_error(kind: str, invalid: Invalid, request_id: str | None = None) -> WireError:
    where = invalid.where()
    return WireError(f"{kind}.{where}: {invalid.reason}" if where else f"{kind}: {invalid.reason}",
                     message_type=kind, field=where or None, request_id=request_id)


def _refusal(text: str, size: int, error: BaseException | None) -> WireError:
    """Why msgspec refused ``text`` (or a hello of another version), worded as before: the JSON,
    the object, its ``type``, a hello's version, a small type's size, then its fields."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        return WireError(f"message: not valid JSON ({str(e)[:120]})")
    if not isinstance(obj, dict):
        return WireError("message: must be a JSON object with a 'type' field")
    request_id = _request_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        return WireError("message.type: missing, or not a string", field="type",
                         request_id=request_id)
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        return WireError(f"message.type: unknown message type {kind!r:.60}", field="type",
                         request_id=request_id)
    if cls is Hello:
        try:
            _check_version(obj)
        except WireError as e:
            return e
    if not cls.LARGE and size > MAX_TEXT_FRAME:
        return _too_large(size, MAX_TEXT_FRAME, kind)
    del obj["type"]
    if isinstance(error, msgspec.ValidationError):
        invalid = explain(error, cls, obj)
    elif isinstance(error, RecursionError):
        invalid = Invalid(f"nests deeper than {MAX_JSON_DEPTH} levels")
    else:  # msgspec refused what json.loads accepts: lone surrogates
        invalid = _surrogate(obj) or Invalid(f"not valid JSON ({str(error)[:120]})")
    return _field_error(kind, invalid, request_id)


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
        wire = (_DECODER if size <= MAX_TEXT_FRAME else _LARGE_DECODER).decode(text)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as e:
        raise _refusal(text, size, e) from None
    cls = _CLASS_OF[type(wire)]
    if cls is Hello and getattr(wire, "protocol") != PROTOCOL_VERSION:
        raise _refusal(text, size, None)
    message: Message = from_wire(wire, cls)
    return message


def encode_text(message: Message) -> str:
    """Validate ``message`` and serialise it as compact UTF-8 JSON with its ``type`` first."""
    cls = type(message)
    kind = getattr(cls, "TYPE", None)
    if not isinstance(kind, str) or MESSAGE_TYPES.get(kind) is not cls:
        raise WireError(f"not a protocol message: {cls.__name__}")
    try:
        data = _ENCODER.encode(to_wire(message))
    except Invalid as e:
        raise _field_error(kind, e) from None
    except UnicodeEncodeError:
        raise _field_error(kind, _surrogate(msgspec.to_builtins(to_wire(message)))
                           or Invalid("must be valid Unicode (no lone surrogates)")) from None
    limit = MAX_LARGE_TEXT_FRAME if cls.LARGE else MAX_TEXT_FRAME
    if len(data) > limit:
        raise _too_large(len(data), limit, kind)
    return data.decode("utf-8")


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
