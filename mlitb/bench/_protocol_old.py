"""The hand-written text-frame codec mlitb used before msgspec (``mlitb/protocol/_schema.py`` and
``_text.py`` as of commit f3a3a1b), kept as a reference only: ``mlitb/bench/protocol.py`` times it beside
msgspec's in the same process on the same messages, and ``tests/test_bench_protocol.py`` checks that
both accept and refuse alike. It reads the same message dataclasses and constraint markers
(``mlitb.protocol._schema``). Nothing else imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, NoReturn, cast, get_args, get_origin

from mlitb.protocol import (
    MAX_JSON_DEPTH,
    MAX_LARGE_TEXT_FRAME,
    MAX_TEXT_FRAME,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    CloseCode,
    Hello,
    Message,
    WireError,
)
from mlitb.protocol._messages import RequestId
from mlitb.protocol._schema import Check, Invalid, Length, Pattern, Printable, Range, Unique

Converter = Callable[[Any], Any]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _apply(constraint: object, value: Any) -> None:
    if isinstance(constraint, Range):
        if not constraint.lo <= value <= constraint.hi:
            lo, hi = (f"{b:g}" if isinstance(b, float) else str(b)
                      for b in (constraint.lo, constraint.hi))
            span = f"at least {lo}" if math.isinf(constraint.hi) else f"between {lo} and {hi}"
            raise Invalid(f"must be {span}, got {_show(value)}")
    elif isinstance(constraint, Length):
        unit = "characters" if isinstance(value, str) else "items"
        if not constraint.lo <= len(value) <= constraint.hi:
            span = (f"at most {constraint.hi}" if constraint.lo == 0
                    else f"{constraint.lo} to {constraint.hi}")
            raise Invalid(f"must have {span} {unit}, got {len(value)}")
    elif isinstance(constraint, Pattern):
        if re.fullmatch(constraint.regex, value) is None:
            raise Invalid(f"must be {constraint.hint}, got {_show(value)}")
    elif isinstance(constraint, Printable):
        if not value.isprintable():
            raise Invalid(f"must not contain control characters, got {_show(value)}")
    elif isinstance(constraint, Unique) and len(set(value)) != len(value):
        raise Invalid("must not repeat an item")
    elif isinstance(constraint, Check) and not constraint.test(value):
        raise Invalid(constraint.reason)


# -- leaf converters (the same both ways) ----------------------------------------------------------
def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise Invalid(f"must be an integer, got {_kind(value)} {_show(value)}")


def _float(value: Any) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
        raise Invalid(f"must be a finite number, got {_show(value)}")
    raise Invalid(f"must be a number, got {_kind(value)} {_show(value)}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {_kind(value)} {_show(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("must be valid Unicode (no lone surrogates)") from None
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid(f"must be true or false, got {_kind(value)} {_show(value)}")


def _json(value: Any, depth: int = 0) -> Any:
    """Any JSON value, checked for finite numbers, string keys and nesting depth."""
    if depth > MAX_JSON_DEPTH:
        raise Invalid(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _float(value)
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_json(item, depth + 1))
            except Invalid as e:
                e.path.insert(0, f"[{i}]")
                raise
        return out
    if isinstance(value, Mapping):
        obj = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid(f"object keys must be strings, got {_show(key)}")
            try:
                obj[_str(key)] = _json(item, depth + 1)
            except Invalid as e:
                e.path.insert(0, key)
                raise
        return obj
    raise Invalid(f"must be a JSON value, got {type(value).__name__}")


# -- composite converters --------------------------------------------------------------------------
def _constrained(base: Converter, constraints: tuple[object, ...]) -> Converter:
    def convert(value: Any) -> Any:
        out = base(value)
        for constraint in constraints:
            _apply(constraint, out)
        return out
    return convert


def _literal(values: tuple[str, ...]) -> Converter:
    allowed = frozenset(values)
    names = ", ".join(repr(v) for v in values)

    def convert(value: Any) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        raise Invalid(f"must be one of {names}, got {_show(value)}")
    return convert


def _optional(inner: Converter) -> Converter:
    def convert(value: Any) -> Any:
        return None if value is None else inner(value)
    return convert


def _int_range(tp: Any) -> Range | None:
    """The Range of ``Annotated[int, Range(...)]`` (the element type of id lists), else None."""
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        if base is int and len(meta) == 1 and isinstance(meta[0], Range):
            return meta[0]
    return None


def _sequence(item_tp: Any, decode: bool) -> Converter:
    item = converter(item_tp, decode)
    bounds = _int_range(item_tp)
    build: Callable[[list[Any]], Any] = tuple if decode else list

    def convert(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"must be a list, got {_kind(value)} {_show(value)}")
        # Fast path for id lists: tens of thousands of ints checked at C speed.
        if bounds is not None and all(type(x) is int for x in value) and (
                not value or (bounds.lo <= min(value) and max(value) <= bounds.hi)):
            return build(list(value))
        out = []
        for i, x in enumerate(value):
            try:
                out.append(item(x))
            except Invalid as e:
                e.path.insert(0, f"[{i}]")
                raise
        return build(out)
    return convert


def _mapping(key_tp: Any, value_tp: Any, decode: bool) -> Converter:
    key_conv, value_conv = converter(key_tp, decode), converter(value_tp, decode)

    def convert(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise Invalid(f"must be an object, got {_kind(value)} {_show(value)}")
        out = {}
        for k, v in value.items():
            try:
                out[key_conv(k)] = value_conv(v)
            except Invalid as e:
                e.path.insert(0, str(k))
                raise
        return out
    return convert


def _dataclass(cls: type, decode: bool) -> Converter:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls)]
    convs = {f.name: converter(hints[f.name], decode) for f in fields}
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]

    def from_json(value: Any) -> Any:
        if not isinstance(value, dict):
            raise Invalid(f"must be an object, got {_kind(value)} {_show(value)}")
        for key in value:
            if key not in convs:
                raise Invalid("unknown field", str(key))
        for name in required:
            if name not in value:
                raise Invalid("missing required field", name)
        kwargs = {}
        for key, item in value.items():
            try:
                kwargs[key] = convs[key](item)
            except Invalid as e:
                e.path.insert(0, key)
                raise
        obj = cls(**kwargs)
        check(obj)
        return obj

    def to_json(value: Any) -> Any:
        if not isinstance(value, cls):
            raise Invalid(f"must be a {cls.__name__}, got {type(value).__name__}")
        out = {}
        for name, conv in convs.items():
            try:
                out[name] = conv(getattr(value, name))
            except Invalid as e:
                e.path.insert(0, name)
                raise
        check(value)
        return out

    return from_json if decode else to_json


def check(obj: Any) -> None:
    """Run a dataclass's cross-field checks: ``_check()`` raises ``Invalid(reason, field)``."""
    method = getattr(obj, "_check", None)
    if method is not None:
        method()


_CACHE: dict[tuple[Any, bool], Converter] = {}


def converter(tp: Any, decode: bool) -> Converter:
    """The converter for annotation ``tp``: JSON to Python when ``decode``, else Python to JSON."""
    key = (tp, decode)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = _build(tp, decode)
    return found


def _build(tp: Any, decode: bool) -> Converter:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _constrained(converter(args[0], decode), tuple(tp.__metadata__))
    if tp is int:
        return _int
    if tp is float:
        return _float
    if tp is str:
        return _str
    if tp is bool:
        return _bool
    if tp is Any:
        return _json
    if origin is Literal:
        return _literal(args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _optional(converter(rest[0], decode))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(args[0], decode)
    if origin is dict:
        return _mapping(args[0], args[1], decode)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, decode)
    raise TypeError(f"no wire form for annotation {tp!r}")


# -- the text frames ----------------------------------------------------------------------------
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
