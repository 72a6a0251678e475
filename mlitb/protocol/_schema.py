"""Typed message fields: constraints as ``Annotated`` metadata, and the converters that check them.

A message is a frozen dataclass whose field annotations say everything about the wire form, e.g.
``Annotated[float, Range(1, 30)]``. ``converter(tp, decode=True)`` turns JSON values into Python
values (lists become tuples, objects become nested dataclasses) and ``decode=False`` does the
reverse; both directions apply the same checks, so nothing invalid is ever sent or accepted. A
failure raises ``Invalid`` carrying the path to the value (``project.labels[3]``); ``_text`` adds
the message type.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from ._limits import MAX_JSON_DEPTH

Converter = Callable[[Any], Any]


class Invalid(Exception):
    """A value failed its check. ``path`` lists segments from the message down to the value."""

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = list(path)

    def where(self) -> str:
        return "".join(s if s.startswith("[") else "." + s for s in self.path).lstrip(".")


# -- constraints -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """A number within ``[lo, hi]``."""

    lo: float
    hi: float


@dataclasses.dataclass(frozen=True)
class Length:
    """A string (characters), list (items) or object (entries) of ``lo`` to ``hi`` elements."""

    lo: int
    hi: int


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` entirely; ``hint`` says in words what that means."""

    regex: str
    hint: str


@dataclasses.dataclass(frozen=True)
class Printable:
    """A string without control characters (no newlines, tabs, NUL...)."""


@dataclasses.dataclass(frozen=True)
class Unique:
    """A list without repeated items."""


@dataclasses.dataclass(frozen=True)
class Check:
    """Any other condition on the value: ``test(value)`` must hold, else ``reason`` is the error."""

    test: Callable[[Any], bool]
    reason: str


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
