"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme) for the closure's content hash.

JCS serializes a JSON value one way only: object members sorted by their names' UTF-16 code
units, no whitespace, strings escaped as ECMAScript's ``JSON.stringify`` does, and numbers written
as ECMAScript's ``Number.prototype.toString`` writes them (shortest round-trip digits; ``2.0`` is
``2``, ``1e-8`` is ``1e-8``, ``1e21`` is ``1e+21``). Libraries exist for most languages (npm
``canonicalize``, Java ``erdtman/java-json-canonicalization``, Go ``gowebpki/jcs``, Python
``rfc8785``), so any of them can recompute a closure's ``content_sha256``.

mlitb uses the ``rfc8785`` library. It writes byte for byte what mlitb's own serializer wrote
before (tests/test_canonical.py compares the two over generated values and checks a closure sealed
by the old one, tests/vectors/golden.closure.json), so no closure's hash changed. It is slower on
the long lists of a large data manifest (docs/performance.md, *Closures*): a fraction of a second
per save of a CIFAR-10-sized closure, which a file format's clarity is worth.

Integers must lie within ±(2**53 - 1), where every JSON reader holds them exactly; numbers must
be finite. ``rfc8785`` refuses both; this module turns its exceptions into ``ClosureError``.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from ..errors import ClosureError

MAX_SAFE_INTEGER = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value, as UTF-8 bytes."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError as exc:
        raise ClosureError(f"an integer is too large for portable JSON (at most "
                           f"±{MAX_SAFE_INTEGER}): {exc}") from None
    except rfc8785.FloatDomainError as exc:
        raise ClosureError(f"a number is not finite, which JSON cannot hold: {exc}") from None
    except UnicodeEncodeError:
        # rfc8785 sorts keys by their UTF-16 form, which a lone surrogate does not have.
        raise ClosureError("an object key holds a lone surrogate (\\ud800-\\udfff), which is not "
                           "valid Unicode") from None
    except rfc8785.CanonicalizationError as exc:
        if isinstance(exc.__cause__, UnicodeEncodeError):
            raise ClosureError("a string holds a lone surrogate (\\ud800-\\udfff), which is not "
                               "valid Unicode") from None
        raise ClosureError(f"cannot be written in JSON: {exc}") from None
