"""A small JSON Schema (draft 2020-12) validator for the subset ``closure.schema.json`` uses.

The schema file is the format's structural definition for every language; this module checks a
document against it so that mlitb needs no ``jsonschema`` dependency. It knows the keywords the
schema uses and refuses a schema with any other, so the two cannot drift apart silently:
``type`` (one or a list), ``const``, ``enum``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``minItems``, ``maxItems``, ``minLength``, ``maxLength``,
``pattern``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` and local
``$ref`` (``#/$defs/name``); annotations (``title``, ``description``, ``format``, ...) are
ignored. One check is added that JSON itself guarantees: numbers are finite.

Errors raise ``ClosureError`` naming the first offending field by its path, e.g.
``data.train.sha256[3]: must match ^[0-9a-f]{64}$, got 'xyz'``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any, Final

from ..errors import ClosureError

SCHEMA_FILE: Final = "closure.schema.json"

_ANNOTATIONS: Final = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description",
                                 "format", "examples", "default"})
_KEYWORDS: Final = frozenset({"type", "const", "enum", "properties", "required",
                              "additionalProperties", "items", "minItems", "maxItems", "minLength",
                              "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
                              "exclusiveMaximum", "$ref"})
_TYPE_NAMES: Final = {"object": "an object", "array": "an array", "string": "a string",
                      "integer": "an integer", "number": "a number", "boolean": "true or false",
                      "null": "null"}


@functools.cache
def load_schema() -> dict[str, Any]:
    """The closure's JSON Schema, as shipped in the package."""
    text = files("mlitb.closure").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    _check_keywords(schema, "#")
    return schema


def _check_keywords(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise TypeError(f"{where}: a schema must be an object or a boolean")
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ValueError(f"{where}: keyword(s) {sorted(unknown)} are not supported by "
                         "mlitb.closure._schema")
    for name, sub in schema.get("$defs", {}).items():
        _check_keywords(sub, f"{where}/$defs/{name}")
    for name, sub in schema.get("properties", {}).items():
        _check_keywords(sub, f"{where}/properties/{name}")
    for key in ("additionalProperties", "items"):
        if key in schema:
            _check_keywords(schema[key], f"{where}/{key}")


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # ECMA-262's $ matches only at the very end; Python's also before a final newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, (list, tuple))
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if name == "integer":
        return isinstance(value, int) or value.is_integer()
    return name == "number"


def describe(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)


_LEAF_KEYWORDS: Final = frozenset({"type", "pattern", "minimum", "maximum", "minLength",
                                   "maxLength", "$ref"})


def _matches(pattern: re.Pattern[str], x: Any) -> bool:
    return type(x) is str and pattern.search(x) is not None


def _at_least(bound: float, x: Any) -> bool:
    return type(x) in (int, float) and bool(x >= bound)


def _at_most(bound: float, x: Any) -> bool:
    return type(x) in (int, float) and bool(x <= bound)


def _longer(bound: int, x: Any) -> bool:
    return type(x) is str and len(x) >= bound


def _shorter(bound: int, x: Any) -> bool:
    return type(x) is str and len(x) <= bound


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Validator:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self._leaves: dict[int, Callable[[Any], bool] | None] = {}

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"only local '#/$defs/...' references are supported, got {ref!r}")
        return self.root["$defs"][ref[len("#/$defs/"):]]

    def check(self, value: Any, schema: Any, path: str) -> None:
        where = path or "the closure"
        if schema is True:
            return
        if schema is False:
            raise ClosureError(f"{where}: is not allowed here")
        if "$ref" in schema:
            self.check(value, self.resolve(schema["$ref"]), path)
        if isinstance(value, float) and not math.isfinite(value):
            raise ClosureError(f"{where}: must be a finite number, got {value!r}")
        if "const" in schema and not _equal(value, schema["const"]):
            raise ClosureError(f"{where}: must be {json.dumps(schema['const'])}, "
                               f"got {describe(value)}")
        if "enum" in schema and not any(_equal(value, x) for x in schema["enum"]):
            options = ", ".join(json.dumps(x) for x in schema["enum"])
            raise ClosureError(f"{where}: must be one of {options}, got {describe(value)}")
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, t) for t in types):
                wanted = " or ".join(_TYPE_NAMES[t] for t in types)
                raise ClosureError(f"{where}: must be {wanted}, got {describe(value)}")
        if isinstance(value, Mapping):
            self.check_object(value, schema, path)
        elif isinstance(value, (list, tuple)):
            self.check_array(value, schema, path)
        elif isinstance(value, str):
            self.check_string(value, schema, where)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.check_number(value, schema, where)

    def check_object(self, value: Mapping[str, Any], schema: Any, path: str) -> None:
        for key in schema.get("required", ()):
            if key not in value:
                raise ClosureError(f"{_join(path, key)}: required field is missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                self.check(item, properties[key], _join(path, key))
            elif extra is False:
                raise ClosureError(f"{_join(path, key)}: unknown field")
            else:
                self.check(item, extra, _join(path, key))

    def check_array(self, value: list[Any] | tuple[Any, ...], schema: Any, path: str) -> None:
        where = path or "the closure"
        if len(value) < schema.get("minItems", 0):
            raise ClosureError(f"{where}: needs at least {schema['minItems']} items, "
                               f"got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ClosureError(f"{where}: holds at most {schema['maxItems']} items, "
                               f"got {len(value)}")
        if "items" in schema:
            items = schema["items"]
            fast = self.leaf(items)
            if fast is not None:  # long lists of hashes or indices: one tight loop
                bad = next((i for i, item in enumerate(value) if not fast(item)), None)
                if bad is None:
                    return
                self.check(value[bad], items, f"{path}[{bad}]")  # raises, naming the problem
            for i, item in enumerate(value):
                self.check(item, items, f"{path}[{i}]")

    def leaf(self, schema: Any) -> Callable[[Any], bool] | None:
        """A fast test for a schema of one scalar type with simple bounds, or None."""
        key = id(schema)
        if key not in self._leaves:
            self._leaves[key] = self._make_leaf(schema)
        return self._leaves[key]

    def _make_leaf(self, schema: Any) -> Callable[[Any], bool] | None:
        tests: list[Callable[[Any], bool]] = []
        while True:
            if not isinstance(schema, dict) or set(schema) - _LEAF_KEYWORDS - _ANNOTATIONS:
                return None
            kind = schema.get("type")
            if kind == "string":
                tests.append(lambda x: type(x) is str)
            elif kind == "integer":
                tests.append(lambda x: type(x) is int)  # 1.0 takes the slow, exact path
            elif kind is not None:
                return None
            if "pattern" in schema:
                tests.append(functools.partial(_matches, _regex(schema["pattern"])))
            for name, test in (("minimum", _at_least), ("maximum", _at_most),
                               ("minLength", _longer), ("maxLength", _shorter)):
                if name in schema:
                    tests.append(functools.partial(test, schema[name]))
            if "$ref" not in schema:
                break
            schema = self.resolve(schema["$ref"])
        if not tests:
            return None
        return lambda x: all(test(x) for test in tests)

    @staticmethod
    def check_string(value: str, schema: Any, where: str) -> None:
        if len(value) < schema.get("minLength", 0):
            raise ClosureError(f"{where}: needs at least {schema['minLength']} characters, "
                               f"got {describe(value)}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ClosureError(f"{where}: holds at most {schema['maxLength']} characters, "
                               f"got {describe(value)}")
        if "pattern" in schema and not _regex(schema["pattern"]).search(value):
            raise ClosureError(f"{where}: must match {schema['pattern']}, got {describe(value)}")

    @staticmethod
    def check_number(value: float, schema: Any, where: str) -> None:
        for key, op in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"),
                        ("exclusiveMaximum", "<")):
            if key not in schema:
                continue
            bound = schema[key]
            ok = {">=": value >= bound, "<=": value <= bound, ">": value > bound,
                  "<": value < bound}[op]
            if not ok:
                raise ClosureError(f"{where}: must be {op} {bound}, got {value!r}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers (Python's True == 1 is not JSON's)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def validate(document: Any, schema: Mapping[str, Any] | None = None) -> None:
    """Check ``document`` against ``schema`` (default: the closure schema); raise ClosureError."""
    root = load_schema() if schema is None else schema
    _Validator(root).check(document, root, "")
