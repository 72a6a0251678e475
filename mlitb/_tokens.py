"""Per-project tokens as the master keeps them: SHA-256 hashes, compared in constant time.

The master (``mlitb/master/_access.py``) and a standalone data server, which learns the hashes
from its master (``mlitb/dataserver/_registrar.py``), check tokens the same way.
"""

from __future__ import annotations

import hashlib
import hmac


def token_hash(token: str) -> str:
    """The hex SHA-256 of ``token`` (UTF-8)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def matches(given: str | None, stored: str | None) -> bool:
    """Whether ``given`` is the token hashed as ``stored``; no stored hash: anything matches."""
    if stored is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(token_hash(given).encode(), stored.encode())
