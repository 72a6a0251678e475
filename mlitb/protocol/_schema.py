"""Typed message fields: constraints as ``Annotated`` metadata, checked by msgspec at C speed.

A message is a frozen dataclass whose field annotations say everything about the wire form, e.g.
``Annotated[float, Range(1, 30)]``. ``wire_struct(cls)`` turns such a dataclass into a
``msgspec.Struct`` of the same fields (its *wire struct*: ``Range``, ``Length`` and ``Pattern``
become ``msgspec.Meta`` constraints, unknown fields are refused, a message's ``type`` is its tag).
msgspec decodes JSON into wire structs and checks types and constraints in C; what msgspec cannot
express runs in the wire struct's ``__post_init__``, which msgspec calls while decoding and
converting: ``Printable``, ``Unique``, ``Check``, free-form JSON (depth, finite numbers, string
keys) and a dataclass's cross-field ``_check()``. Both directions go through the wire struct, so
nothing invalid is sent or accepted. ``explain`` turns msgspec's ``ValidationError`` into
``Invalid`` with the path to the value (``projects[0].labels[3]``) and a reason in words;
``_text`` adds the message type.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from ._limits import MAX_JSON_DEPTH

Converter = Callable[[Any], Any]
FINITE_MAX = sys.float_info.max
"""Every float field is bounded by ±``FINITE_MAX``: infinities (and NaN) fail the bound."""


class Invalid(ValueError):
    """A value failed its check. ``path`` lists segments from the message down to the value.

    A ``ValueError``: raised in a wire struct's ``__post_init__``, msgspec wraps it in a
    ``ValidationError`` (with the path to that struct) and keeps it as the ``__cause__``."""

    def __init__(self, reason: str, *path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = list(path)

    def where(self) -> str:
        return "".join(s if s.startswith("[") else "." + s for s in self.path).lstrip(".")


# -- constraints -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Range:
    """A number within ``[lo, hi]`` (msgspec ``ge``/``le``; a float's infinite bound is
    ``FINITE_MAX``, so floats are always finite)."""

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
    """A string without control characters (no newlines, tabs, NUL...): checked after msgspec."""


@dataclasses.dataclass(frozen=True)
class Unique:
    """A list without repeated items: checked after msgspec."""


@dataclasses.dataclass(frozen=True)
class Check:
    """Any other condition on the value: ``test(value)`` must hold, else ``reason`` is the error."""

    test: Callable[[Any], bool]
    reason: str


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", tuple: "list", str: "string", bool: "boolean",
            type(None): "null", int: "integer", float: "number"}.get(type(value),
                                                                      type(value).__name__)


def _json(value: Any, depth: int = 0) -> None:
    """Free-form JSON (``Any`` fields): finite numbers, string keys, at most MAX_JSON_DEPTH deep.

    Decoded JSON is finite with string keys already (msgspec refuses ``1e400``); this is for the
    depth, and for values built in Python on their way out."""
    if depth > MAX_JSON_DEPTH:
        raise Invalid(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if type(item) in _FLAT and (type(item) is not float or math.isfinite(item)):
                continue
            try:
                _json(item, depth + 1)
            except Invalid as e:
                e.path.insert(0, f"[{i}]")
                raise
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid(f"object keys must be strings, got {_show(key)}")
            try:
                _json(item, depth + 1)
            except Invalid as e:
                e.path.insert(0, key)
                raise
    elif value is None or isinstance(value, (bool, str, numbers.Integral)):
        pass
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {_show(value)}")
    else:
        raise Invalid(f"must be a JSON value, got {type(value).__name__}")


_FLAT = frozenset({str, int, bool, type(None), float})


# -- annotations -> wire types ---------------------------------------------------------------------
def _meta(base: Any, constraint: object) -> msgspec.Meta | None:
    if isinstance(constraint, Range):
        if base is int:
            return msgspec.Meta(ge=int(constraint.lo), le=int(constraint.hi))
        return msgspec.Meta(ge=max(float(constraint.lo), -FINITE_MAX),
                            le=min(float(constraint.hi), FINITE_MAX))
    if isinstance(constraint, Length):
        return msgspec.Meta(min_length=constraint.lo, max_length=constraint.hi)
    if isinstance(constraint, Pattern):
        return msgspec.Meta(pattern=rf"^(?:{constraint.regex})\Z", description=constraint.hint)
    return None


_FINITE = Annotated[float, msgspec.Meta(ge=-FINITE_MAX, le=FINITE_MAX)]


def wire_type(tp: Any) -> Any:
    """Annotation ``tp`` as msgspec reads it: our constraints as ``msgspec.Meta``, dataclasses as
    their wire structs, every float finite."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        metas = [m for m in (_meta(args[0], c) for c in tp.__metadata__) if m is not None]
        ranged = any(isinstance(c, Range) for c in tp.__metadata__)
        base = float if args[0] is float and ranged else wire_type(args[0])
        return Annotated[(base, *metas)] if metas else base
    if tp is float:
        return _FINITE
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(wire_type(a) for a in args)]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple[wire_type(args[0]), ...]  # type: ignore[misc]
    if origin is dict:
        return dict[wire_type(args[0]), wire_type(args[1])]  # type: ignore[misc]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return wire_struct(tp)
    if tp in (int, str, bool, Any, type(None)) or origin is Literal:
        return tp
    raise TypeError(f"no wire form for annotation {tp!r}")


# -- what msgspec cannot check: run in the wire struct's __post_init__ ----------------------------
def _marker(constraint: object) -> Converter | None:
    if isinstance(constraint, Printable):
        def printable(value: Any) -> None:
            if not value.isprintable():
                raise Invalid(f"must not contain control characters, got {_show(value)}")
        return printable
    if isinstance(constraint, Unique):
        def unique(value: Any) -> None:
            if len(set(value)) != len(value):
                raise Invalid("must not repeat an item")
        return unique
    if isinstance(constraint, Check):
        def check(value: Any) -> None:
            if not constraint.test(value):
                raise Invalid(constraint.reason)
        return check
    return None


def _post_check(tp: Any) -> Converter | None:
    """The checks of annotation ``tp`` that msgspec does not do, or None if there are none."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        inner = _post_check(args[0])
        own = [c for c in (_marker(m) for m in tp.__metadata__) if c is not None]
        checks = ([inner] if inner else []) + own
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]

        def all_of(value: Any) -> None:
            for check in checks:
                check(value)
        return all_of
    if tp is Any:
        return _json
    if origin in (typing.Union, types.UnionType):
        (rest,) = [a for a in args if a is not type(None)]
        inner = _post_check(rest)
        if inner is None:
            return None
        opt_inner = inner

        def optional(value: Any) -> None:
            if value is not None:
                opt_inner(value)
        return optional
    if origin is tuple:
        item = _post_check(args[0])
        if item is None:
            return None
        seq_item = item

        def each(value: Any) -> None:
            for i, x in enumerate(value):
                try:
                    seq_item(x)
                except Invalid as e:
                    e.path.insert(0, f"[{i}]")
                    raise
        return each
    if origin is dict:
        key, item = _post_check(args[0]), _post_check(args[1])
        if key is None and item is None:
            return None

        def entries(value: Any) -> None:
            for k, v in value.items():
                try:
                    if key is not None:
                        key(k)
                    if item is not None:
                        item(v)
                except Invalid as e:
                    e.path.insert(0, str(k))
                    raise
        return entries
    return None  # scalars, literals, nested dataclasses (their wire struct checks itself)


_HINTS: dict[type, dict[str, Any]] = {}
_STRUCTS: dict[type, type[msgspec.Struct]] = {}


def hints(cls: type) -> dict[str, Any]:
    """The annotations of dataclass ``cls``, with their metadata."""
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return found


def wire_struct(cls: type) -> type[msgspec.Struct]:
    """The ``msgspec.Struct`` that carries dataclass ``cls`` on the wire: the same fields and
    defaults (but the fields named in ``cls.WIRE_REQUIRED`` have none), tagged by ``cls.TYPE``
    if it is a message, unknown fields refused."""
    found = _STRUCTS.get(cls)
    if found is not None:
        return found
    fields: list[Any] = []
    checks: list[tuple[str, Converter]] = []
    required: frozenset[str] = getattr(cls, "WIRE_REQUIRED", frozenset())
    for f in dataclasses.fields(cls):
        tp = hints(cls)[f.name]
        if f.name in required:
            fields.append((f.name, wire_type(tp)))
        elif f.default is not dataclasses.MISSING:
            fields.append((f.name, wire_type(tp), f.default))
        elif f.default_factory is not dataclasses.MISSING:
            factory = f.default_factory
            if dataclasses.is_dataclass(factory) and isinstance(factory, type):
                factory = wire_struct(factory)  # e.g. Training(): its wire struct's defaults
            fields.append((f.name, wire_type(tp), msgspec.field(default_factory=factory)))
        else:
            fields.append((f.name, wire_type(tp)))
        check = _post_check(tp)
        if check is not None:
            checks.append((f.name, check))
    cross = getattr(cls, "_check", None)

    def __post_init__(self: Any) -> None:
        for name, check in checks:
            try:
                check(getattr(self, name))
            except Invalid as e:
                e.path.insert(0, name)
                raise
        if cross is not None:
            cross(self)  # written for the dataclass: it reads the same attribute names

    kind = getattr(cls, "TYPE", None)
    tagged = isinstance(kind, str)
    namespace = {"__post_init__": __post_init__} if checks or cross is not None else {}
    struct = msgspec.defstruct(cls.__name__, fields, kw_only=True, frozen=True,
                               forbid_unknown_fields=True, module=cls.__module__,
                               namespace=namespace, tag_field="type" if tagged else None,
                               tag=kind if tagged else None)
    _STRUCTS[cls] = struct
    return struct


# -- msgspec's errors in words ---------------------------------------------------------------------
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<at>[^`]*)`(?: in `(?P<in>[^`]*)`)?)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "array": "a list", "object": "an object", "null": "null"}


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """``tp`` without ``Annotated`` and ``| None``, and the metadata it had."""
    meta: list[Any] = []
    while True:
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            meta.extend(tp.__metadata__)
            tp = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
            tp = next(a for a in args if a is not type(None))
        else:
            return tp, meta


def _child(value: Any, key: Any) -> Any:
    try:
        if isinstance(key, int):
            return value[key]
        return value[key] if isinstance(value, Mapping) else getattr(value, key)
    except (LookupError, TypeError, AttributeError):
        return None


def _fails(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, wire_type(tp))
    except msgspec.ValidationError:
        return True
    return False


def explain(error: msgspec.ValidationError, cls: type, source: Any) -> Invalid:
    """msgspec's ``error`` from decoding or converting into ``wire_struct(cls)``, as ``Invalid``
    naming the field and saying what is wrong in words. ``source``: the JSON object (or the
    dataclass) that failed, to quote the value and find the key of a failing object entry."""
    try:
        return _explain(error, cls, source)
    except Exception:  # the wording is best effort: a refusal must never become a crash
        return Invalid(str(error))


def _explain(error: msgspec.ValidationError, cls: type, source: Any) -> Invalid:
    found = _AT.match(str(error))
    assert found is not None
    msg, at, key_of = found["msg"], found["at"], found["in"]
    if key_of is not None:  # "at `key` in `$.hyperparameters`": a dict key failed
        at = key_of
    path: list[str] = []
    tp: Any = cls
    value: Any = source
    for name, index in _SEGMENT.findall((at or "$")[1:]):
        base, _ = _strip(tp)
        if name:
            path.append(name)
            known = isinstance(base, type) and dataclasses.is_dataclass(base)
            tp = hints(base).get(name, Any) if known else Any
            value = _child(value, name)
        elif index != "...":
            path.append(f"[{index}]")
            tp = get_args(base)[0] if get_origin(base) is tuple else Any
            value = _child(value, int(index))
        else:  # "[...]": a value in an object; msgspec does not say which one
            entries = value.items() if isinstance(value, Mapping) else ()
            item_tp = get_args(base)[1] if get_origin(base) is dict else Any
            culprit = None if item_tp is Any else next(
                ((k, v) for k, v in entries if _fails(v, item_tp)), None)
            if culprit is None:  # free-form JSON: its own check finds it
                try:
                    _json(value)
                except Invalid as e:
                    return Invalid(e.reason, *path, *e.path)
                return Invalid(_reason(msg, None, [], None), *path)
            path.append(str(culprit[0]))
            tp, value = item_tp, culprit[1]
    cause = error.__cause__
    if isinstance(cause, Invalid):
        return Invalid(cause.reason, *path, *cause.path)
    if key_of is not None:
        key_tp = get_args(_strip(tp)[0])[0] if get_origin(_strip(tp)[0]) is dict else Any
        bad = next((k for k in (value if isinstance(value, Mapping) else ())
                    if _fails(k, key_tp)), None)
        if bad is not None and not isinstance(bad, str):
            return Invalid(f"object keys must be strings, got {_show(bad)}", *path)
        if bad is not None:
            path.append(str(bad))
            tp, value = key_tp, bad
        return Invalid(_reason(msg, tp, _strip(tp)[1], bad), *path)
    for field in ("missing required field", "contains unknown field"):
        named = re.match(rf"Object {field} `(.*)`$", msg)
        if named:
            return Invalid(field.removeprefix("contains "), *path, named[1])
    return Invalid(_reason(msg, tp, _strip(tp)[1], value), *path)


def _reason(msg: str, tp: Any, meta: list[Any], value: Any) -> str:
    """msgspec's ``msg`` about ``value`` (of annotation ``tp`` with ``meta``) in our words."""
    got = f", got {_show(value)}"
    rng = next((m for m in meta if isinstance(m, Range)), None)
    length = next((m for m in meta if isinstance(m, Length)), None)
    pattern = next((m for m in meta if isinstance(m, Pattern)), None)
    if msg == "Number out of range" or (re.match(r"Expected `float` [<>]=", msg) and isinstance(
            value, float) and not math.isfinite(value)):
        return f"must be a finite number{got}"
    if re.match(r"Expected `(int|float)` [<>]=? ", msg):
        if rng is None:
            return f"must be {msg.split('` ', 1)[1]}{got}"
        lo, hi = (f"{b:g}" if isinstance(b, float) else str(b) for b in (rng.lo, rng.hi))
        span = f"at least {lo}" if math.isinf(rng.hi) else f"between {lo} and {hi}"
        return f"must be {span}{got}"
    if re.match(r"Expected `(str|array|object)` of length", msg):
        unit = "characters" if isinstance(value, str) else "items"
        if length is None:
            return f"must have {msg.split('of length ', 1)[1]} {unit}"
        span = f"at most {length.hi}" if length.lo == 0 else f"{length.lo} to {length.hi}"
        size = f", got {len(value)}" if isinstance(value, (str, list, tuple, dict)) else ""
        return f"must have {span} {unit}{size}"
    if msg.startswith("Expected `str` matching regex") and pattern is not None:
        return f"must be {pattern.hint}{got}"
    if msg.startswith("Invalid enum value"):
        allowed = get_args(_strip(tp)[0]) if tp is not None else ()
        if allowed:
            return f"must be one of {', '.join(repr(v) for v in allowed)}{got}"
    expected = re.match(r"Expected `([^`]*)`, got `([^`]*)`$", msg)
    if expected:
        kinds = " or ".join(_KINDS.get(k, k) for k in expected[1].split(" | "))
        if value is None:
            return f"must be {kinds}, got null"
        return f"must be {kinds}, got {_kind(value)} {_show(value)}"
    return msg[:1].lower() + msg[1:]


# -- whole values (closures' training settings, mlitb.training) -----------------------------------
def plain(value: Any) -> Any:
    """``value`` (a dataclass, containers, numbers of any kind) as plain JSON types: what the
    encoder turns numpy numbers and str subclasses into before checking them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if isinstance(value, Mapping):
        return {plain(k) if isinstance(k, str) else k: plain(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def to_wire(obj: Any) -> msgspec.Struct:
    """Dataclass ``obj`` as its checked wire struct; ``Invalid`` names what is wrong."""
    struct = wire_struct(type(obj))
    try:
        return msgspec.convert(obj, struct, from_attributes=True)
    except msgspec.ValidationError:
        pass  # numpy numbers, str subclasses, ...: try again with plain values
    source = plain(obj)
    if isinstance(getattr(type(obj), "TYPE", None), str):
        source["type"] = type(obj).TYPE
    try:
        return msgspec.convert(source, struct)
    except msgspec.ValidationError as e:
        raise explain(e, type(obj), source) from None


def from_wire(struct: msgspec.Struct, cls: type) -> Any:
    """The dataclass ``cls`` of a checked wire struct (msgspec checks the types again, cheaply,
    not the constraints: the dataclass's markers are not ``msgspec.Meta``)."""
    return msgspec.convert(struct, cls, from_attributes=True)


def converter(tp: Any, decode: bool) -> Converter:
    """For dataclass ``tp``: a JSON object to the checked dataclass when ``decode``, else the
    dataclass to its checked JSON object; ``Invalid`` names what is wrong."""
    if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
        raise TypeError(f"converter: {tp!r} is not a dataclass")
    struct = wire_struct(tp)

    def from_json(value: Any) -> Any:
        try:
            return from_wire(msgspec.convert(value, struct), tp)
        except msgspec.ValidationError as e:
            raise explain(e, tp, value) from None

    def to_json(value: Any) -> Any:
        if not isinstance(value, tp):
            raise Invalid(f"must be a {tp.__name__}, got {type(value).__name__}")
        return msgspec.to_builtins(to_wire(value))

    return from_json if decode else to_json
