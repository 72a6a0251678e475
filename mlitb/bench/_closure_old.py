"""The hand-written closure validator and RFC 8785 serializer mlitb used before it moved to
``jsonschema`` and ``rfc8785`` (``mlitb/closure/_schema.py``, ``_canonical.py`` as of commit
cf39642), kept unchanged as a reference only: ``mlitb/bench/closure.py`` measures the libraries against
it in the same process, and ``tests/test_canonical.py`` checks that ``rfc8785`` writes byte for
byte what this serializer wrote, so no closure's ``content_sha256`` changes. Nothing else imports
it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from mlitb.errors import ClosureError

MAX_SAFE_INTEGER = 2**53 - 1

# -- the validator (a subset of JSON Schema draft 2020-12) -----------------------------------------
_ANNOTATIONS: Final = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description",
                                 "format", "examples", "default"})
_TYPE_NAMES: Final = {"object": "an object", "array": "an array", "string": "a string",
                      "integer": "an integer", "number": "a number", "boolean": "true or false",
                      "null": "null"}


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


def validate(document: Any, schema: Mapping[str, Any]) -> None:
    """Check ``document`` against ``schema``; raise ClosureError."""
    _Validator(schema).check(document, schema, "")


# -- the serializer (RFC 8785) ---------------------------------------------------------------------
def _number(x: float) -> str:
    """ECMAScript Number::toString for a finite double."""
    if not math.isfinite(x):
        raise ClosureError(f"{x!r} cannot be written in JSON")
    if x == 0:
        return "0"  # also -0
    sign = "-" if x < 0 else ""
    text = repr(abs(float(x)))  # shortest digits that round-trip, correctly rounded (as ECMAScript)
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    n = len(whole) + (int(exp) if exp else 0)  # x = 0.<digits> * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = (digits if k == 1 else f"{digits[0]}.{digits[1:]}") + exponent
    return sign + body


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ClosureError(f"the integer {value} is too large for portable JSON "
                               f"(at most {MAX_SAFE_INTEGER})")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        # json.dumps(ensure_ascii=False) escapes exactly as JSON.stringify: \" \\ \b \f \n \r \t
        # and other controls as lowercase \u00xx, nothing else.
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, (list, tuple)):
        # Fast paths for the long lists of a data manifest (hashes, label indices): the same
        # text, written in one call.
        if all(type(x) is str for x in value):
            out.append(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
            return
        if all(type(x) is int for x in value) and \
                all(-MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER for x in value):
            out.append("[" + ",".join(map(str, value)) + "]")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if not isinstance(key, str):
                raise ClosureError(f"object keys must be strings, got {key!r}")
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise ClosureError(f"a {type(value).__name__} cannot be written in JSON")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value, as UTF-8 bytes."""
    out: list[str] = []
    _write(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise ClosureError("a string holds a lone surrogate (\\ud800-\\udfff), which is not "
                           "valid Unicode") from None
