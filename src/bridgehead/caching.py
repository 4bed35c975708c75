"""Short-lived, refresh-ahead caches for the hot lanes (the caller's token, the endpoint being invoked).

An entry lives ``ttl`` seconds. Past ``REFRESH_AT`` of its lifetime it is *due*: `claim_refresh` says so to one
caller, which reads the value again off the request path and `put`s it back, so a busy entry is renewed before
it expires and its requests never all miss at once; an entry still never outlives ``ttl``.

A read that started before a `clear` or `forget` must not put back what it read (a revoked token, a replaced
deployment): a caller takes a `stamp` before reading and passes it to `put`, which drops the value if the cache
was cleared or the key forgotten since.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RefreshAheadCache(Generic[K, V]):
    # The share of the lifetime after which an entry is due for a refresh.
    REFRESH_AT = 0.75

    def __init__(self, ttl: float, max_items: int = 10_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        # key -> (expires, due from, value); "due from" is pushed to "expires" once a refresh is claimed.
        self._items: dict[K, tuple[float, float, V]] = {}
        # Bumped by every clear and forget; a put whose stamp is older is dropped.
        self._generation = 0
        self._lock = threading.Lock()

    def stamp(self) -> int:
        """Take before reading a value to `put`."""
        return self._generation

    def get(self, key: K) -> V | None:
        """The value if its entry is fresh (None also when caching is off, ``ttl`` <= 0)."""
        hit = self._items.get(key)
        return hit[2] if hit is not None and hit[0] > time.monotonic() else None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def claim_refresh(self, key: K) -> bool:
        """True, for one caller only, when the entry is fresh but due: that caller should read the value again
        and `put` it (or `forget` the key if it no longer exists)."""
        hit = self._items.get(key)
        if hit is None or not hit[1] <= time.monotonic() < hit[0]:
            return False  # the hot path's answer nearly always, without taking the lock
        with self._lock:
            hit = self._items.get(key)
            if hit is None or not hit[1] <= time.monotonic() < hit[0]:
                return False
            self._items[key] = (hit[0], hit[0], hit[2])
            return True

    def put(self, key: K, value: V, stamp: int) -> None:
        """Keep ``value`` for ``ttl``, unless the cache was cleared or a key forgotten after ``stamp``."""
        if self.ttl <= 0:
            return
        with self._lock:
            if stamp != self._generation:
                return
            if len(self._items) >= self.max_items:  # many keys: start over rather than grow without bound
                self._items.clear()
            now = time.monotonic()
            self._items[key] = (now + self.ttl, now + self.REFRESH_AT * self.ttl, value)

    def forget(self, key: K) -> None:
        with self._lock:
            self._generation += 1
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._items.clear()
