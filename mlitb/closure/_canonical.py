"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme) for the closure's content hash.

JCS serializes a JSON value one way only: object members sorted by their names' UTF-16 code
units, no whitespace, strings escaped as ECMAScript's ``JSON.stringify`` does, and numbers written
as ECMAScript's ``Number.prototype.toString`` writes them (shortest round-trip digits; ``2.0`` is
``2``, ``1e-8`` is ``1e-8``, ``1e21`` is ``1e+21``). Libraries exist for most languages (npm
``canonicalize``, Java ``erdtman/java-json-canonicalization``, Go ``gowebpki/jcs``, Python
``rfc8785``), so any of them can recompute a closure's ``content_sha256``.

Integers must lie within ±(2**53 - 1), where every JSON reader holds them exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import ClosureError

MAX_SAFE_INTEGER = 2**53 - 1


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
