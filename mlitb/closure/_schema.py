"""The closure's structure: ``closure.schema.json`` (JSON Schema draft 2020-12), checked by the
``jsonschema`` library.

The schema file is the format's structural definition for every language, and any draft
2020-12 validator checks a closure against it; mlitb uses ``jsonschema``'s
``Draft202012Validator``, built once per process. ``format`` is an annotation only (as in the
hand-written validator this module replaced: the ``time`` pattern is what is checked). A real
validator knows every keyword of the draft, so the schema may use any of them; the old module's
refusal of keywords it did not implement is gone (tests/test_closure.py still refuses keywords
no draft 2020-12 vocabulary defines, which every validator would silently ignore: a misspelt
``"minimun"``).

What this module adds to the library:

- JSON's own guarantee that numbers are finite: NaN and infinities are not numbers here (a
  closure read from a file never holds one, the parser refuses them; a dict built in Python
  might);
- ECMA-262 regular expressions' ``$``, which matches only at the very end (Python's ``re``, which
  ``jsonschema`` uses, also matches before a final newline: ``"name\\n"`` would pass);
- the dicts, lists and tuples Python code builds count as JSON objects and arrays;
- a shortcut for long lists of simple items (a manifest's hashes and label indices, history
  points, replay steps): one tight loop passes the list when every item certainly matches, else
  the library's own ``items`` decides and names the problem. Without it a CIFAR-10-sized closure
  took 3 s to validate, with it no longer than with the hand-written validator
  (docs/performance.md, *Closures*); tests/test_closure.py checks that it never passes what the
  library refuses;
- errors: ``ClosureError`` naming the first offending field in document order (what a reader
  meets first, reading the file top to bottom; of many bad hashes, the first) by its path, e.g.
  ``data.train.sha256[3]: must match ^[0-9a-f]{64}$, got 'xyz'``. Keywords without a message of
  ours keep the library's, after the path.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

from ..errors import ClosureError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

SCHEMA_FILE: Final = "closure.schema.json"

_TYPE_NAMES: Final = {"object": "an object", "array": "an array", "string": "a string",
                      "integer": "an integer", "number": "a number", "boolean": "true or false",
                      "null": "null"}
# Several keywords failing on one value: report the one the hand-written validator reported.
_RANK: Final = {"const": 0, "enum": 1, "type": 2, "required": 3, "minItems": 4, "maxItems": 5,
                "minLength": 4, "maxLength": 5, "pattern": 6, "minimum": 4, "maximum": 5,
                "exclusiveMinimum": 6, "exclusiveMaximum": 7}
_BOUNDS: Final = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
                  "exclusiveMaximum": "<"}


@functools.cache
def load_schema() -> dict[str, Any]:
    """The closure's JSON Schema, as shipped in the package."""
    text = files("mlitb.closure").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # ECMA-262's $ matches only at the very end; Python's also before a final newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


_ANNOTATIONS: Final = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description",
                                 "format", "examples", "default", "deprecated", "readOnly",
                                 "writeOnly"})
_SCALARS: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda x: type(x) is str,
    "integer": lambda x: type(x) is int,  # 2.0 and True: the library decides
    "number": lambda x: type(x) is int or (type(x) is float and math.isfinite(x)),
    "boolean": lambda x: type(x) is bool,
    "null": lambda x: x is None,
}
# As in JSON Schema, a bound holds for any value of a type it does not apply to.
_BOUND_TESTS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "minimum": lambda b, x: type(x) not in (int, float) or x >= b,
    "maximum": lambda b, x: type(x) not in (int, float) or x <= b,
    "minLength": lambda b, x: type(x) is not str or len(x) >= b,
    "maxLength": lambda b, x: type(x) is not str or len(x) <= b,
}
_OBJECT_KEYWORDS: Final = frozenset({"properties", "required", "additionalProperties"})
_ARRAY_KEYWORDS: Final = frozenset({"items", "minItems", "maxItems"})
_QUICK_KEYWORDS: Final = frozenset({"type", "pattern", "$ref", *_BOUND_TESTS, *_OBJECT_KEYWORDS,
                                    *_ARRAY_KEYWORDS, *_ANNOTATIONS})


def _any(checks: list[Callable[[Any], bool]], x: Any) -> bool:
    return any(check(x) for check in checks)


def _matches(regex: re.Pattern[str], x: Any) -> bool:
    return type(x) is not str or regex.search(x) is not None


def _quick_test(schema: Any, root: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """A fast test that passes only values ``schema`` accepts, or None: for scalars with simple
    bounds, and objects and arrays of them (a history point, a replay step), following local
    ``$ref``. The library's
    machinery costs 5-25 µs a value: 3 s for the 60,000 hashes and labels of a CIFAR-10
    manifest, 40 ms for 200 history points."""
    tests: list[Callable[[Any], bool]] = []
    while True:
        if not isinstance(schema, dict) or set(schema) - _QUICK_KEYWORDS:
            return None
        kind = schema.get("type")
        kinds = [kind] if isinstance(kind, str) else kind
        if kinds == ["object"]:
            test = _object_test(schema, root)
            if test is None:
                return None
            tests.append(test)
        elif kinds == ["array"]:
            test = _array_test(schema, root)
            if test is None:
                return None
            tests.append(test)
        elif (_OBJECT_KEYWORDS | _ARRAY_KEYWORDS) & set(schema):
            return None
        elif kinds is not None:
            if not set(kinds) <= set(_SCALARS):
                return None
            checks = [_SCALARS[k] for k in kinds]
            tests.append(checks[0] if len(checks) == 1 else functools.partial(_any, checks))
        if "pattern" in schema:
            tests.append(functools.partial(_matches, _regex(schema["pattern"])))
        tests += [functools.partial(test, schema[name]) for name, test in _BOUND_TESTS.items()
                  if name in schema]
        ref = schema.get("$ref")
        if ref is None:
            break
        if not ref.startswith("#/$defs/") or ref[8:] not in root.get("$defs", {}):
            return None
        schema = root["$defs"][ref[8:]]
    if not tests:
        return None
    return tests[0] if len(tests) == 1 else lambda x: all(test(x) for test in tests)


def _object_test(schema: Mapping[str, Any],
                 root: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    maybe = {k: _quick_test(v, root) for k, v in schema.get("properties", {}).items()}
    fields = {k: test for k, test in maybe.items() if test is not None}
    closed = schema.get("additionalProperties", True)
    if closed not in (True, False) or len(fields) < len(maybe):
        return None
    required = tuple(schema.get("required", ()))

    def test(x: Any) -> bool:
        return type(x) is dict and all(k in x for k in required) and \
            all(fields[k](v) if k in fields else closed for k, v in x.items())
    return test


def _array_test(schema: Mapping[str, Any],
                root: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    each = _quick_test(schema["items"], root) if "items" in schema else (lambda x: True)
    if each is None:
        return None
    least, most = schema.get("minItems", 0), schema.get("maxItems", math.inf)

    def test(x: Any) -> bool:
        return type(x) is list and least <= len(x) <= most and all(map(each, x))
    return test


def _validator_for(root: Mapping[str, Any]) -> Validator:
    # jsonschema loads a good deal (referencing, rpds, attrs): only when a closure is checked.
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    base = Draft202012Validator.TYPE_CHECKER
    library_items = Draft202012Validator.VALIDATORS["items"]

    def is_number(checker: Any, x: Any) -> bool:
        return bool(base.is_type(x, "number")) and (type(x) is not float or math.isfinite(x))

    checker = base.redefine_many({
        "number": is_number,
        "object": lambda _, x: isinstance(x, Mapping),
        "array": lambda _, x: isinstance(x, (list, tuple)),
    })

    def pattern(validator: Any, regex: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _regex(regex).search(instance):
            yield ValidationError(f"{instance!r} does not match {regex!r}")

    quick: dict[int, Callable[[Any], bool] | None] = {}  # by id: root holds every subschema

    def items(validator: Any, sub: Any, instance: Any, schema: Any) -> Iterator[Any]:
        # Long lists of hashes and label indices: one tight loop when every item passes, the
        # library's own keyword (and messages) when one does not.
        if id(sub) not in quick:
            quick[id(sub)] = None if "prefixItems" in schema else _quick_test(sub, root)
        test = quick[id(sub)]
        if test is not None and validator.is_type(instance, "array") and all(map(test, instance)):
            return
        yield from library_items(validator, sub, instance, schema)

    cls = validators.extend(Draft202012Validator, {"pattern": pattern, "items": items},
                            type_checker=checker)
    validator: Validator = cls(root)
    return validator


@functools.cache
def _closure_validator() -> Validator:
    return _validator_for(load_schema())


def describe(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _dotted(parts: Any) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


def _missing(error: ValidationError) -> str:
    return str(next(k for k in error.validator_value if k not in error.instance))


def _unknown(error: ValidationError) -> str:
    known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
    return str(next(k for k in error.instance if k not in known))


def _message(error: ValidationError) -> str:
    path = _dotted(error.absolute_path)
    where = path or "the closure"
    kind, bound, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        return f"{_join(path, _missing(error))}: required field is missing"
    if kind == "additionalProperties" and bound is False:
        return f"{_join(path, _unknown(error))}: unknown field"
    if kind == "type" and type(value) is float and not math.isfinite(value):
        return f"{where}: must be a finite number, got {value!r}"
    if kind == "type":
        wanted = " or ".join(_TYPE_NAMES[t] for t in ([bound] if isinstance(bound, str)
                                                      else bound))
        return f"{where}: must be {wanted}, got {describe(value)}"
    if kind == "const":
        return f"{where}: must be {json.dumps(bound)}, got {describe(value)}"
    if kind == "enum":
        options = ", ".join(json.dumps(x) for x in bound)
        return f"{where}: must be one of {options}, got {describe(value)}"
    if kind == "pattern":
        return f"{where}: must match {bound}, got {describe(value)}"
    if kind in _BOUNDS:
        return f"{where}: must be {_BOUNDS[str(kind)]} {bound}, got {value!r}"
    if kind == "minLength":
        return f"{where}: needs at least {bound} characters, got {describe(value)}"
    if kind == "maxLength":
        return f"{where}: holds at most {bound} characters, got {describe(value)}"
    if kind == "minItems":
        return f"{where}: needs at least {bound} items, got {len(value)}"
    if kind == "maxItems":
        return f"{where}: holds at most {bound} items, got {len(value)}"
    if error.schema is False:
        # jsonschema 4.26 drops the path of a false subschema's error (descend() yields it
        # before adding one); the closure schema has no false subschema, only
        # additionalProperties: false, whose error has its path.
        return f"{where}: is not allowed here"
    return f"{where}: {error.message}"


def _position(document: Any, error: ValidationError) -> tuple[tuple[int, ...], int]:
    """Where ``error`` sits in ``document``, in reading order; errors sort by this."""
    at: list[int] = []
    node = document
    for part in error.absolute_path:
        at.append(part if isinstance(part, int) else list(node).index(part))
        node = node[part]
    if error.validator == "additionalProperties" and error.validator_value is False:
        at.append(list(node).index(_unknown(error)))  # among the object's fields, as they come
    return tuple(at), _RANK.get(str(error.validator), len(_RANK))


def validate(document: Any, schema: Mapping[str, Any] | None = None) -> None:
    """Check ``document`` against ``schema`` (default: the closure schema); raise ClosureError."""
    validator = _closure_validator() if schema is None else _validator_for(schema)
    errors = list(validator.iter_errors(document))
    if errors:
        first = min(errors, key=lambda e: _position(document, e))
        raise ClosureError(_message(first))
