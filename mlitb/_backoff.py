"""Reconnect delays, one policy for every client of the master (nodes, the console, a
standalone data server's registrar): exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """``initial`` seconds doubling up to ``maximum``, each delay drawn uniformly from
    [delay/2, delay], so that the clients a master lost at the same moment do not all come back
    at the same moment. ``reset()`` after a successful connection."""

    def __init__(self, initial: float, maximum: float,
                 rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"Backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial, self.maximum = initial, maximum
        self.attempt = 0
        self.rng = rng or random.Random()

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        delay = min(self.maximum, self.initial * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return delay * (0.5 + 0.5 * self.rng.random())
