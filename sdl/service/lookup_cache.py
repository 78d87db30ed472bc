"""A short-lived cache of database lookups that every change empties at once.

Tokens and memberships are read on every request and every live-stream check, so they
are cached for a moment; a revoked token or a removed member must stop working at once,
so every change empties the cache (``invalidate``) and tells the listeners (open live
streams re-check themselves). A lookup that raced with a change is returned to its caller
but not kept: the generation counter says whether anything changed while it read.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, Hashable, TypeVar

V = TypeVar("V")

MAX_ENTRIES = 10_000  # then the cache starts over: a bound on memory, not an eviction policy


class LookupCache(Generic[V]):
    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        #: called after every change
        self.listeners: set[Callable[[], Any]] = set()

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
        for fn in list(self.listeners):
            fn()

    def fresh(self, key: Hashable) -> tuple[bool, V | None]:
        """``(True, value)`` for an entry younger than the ttl, else ``(False, None)``."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or time.monotonic() - hit[0] >= self.ttl:
            return False, None
        return True, hit[1]

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value, or ``load()`` (kept unless a change happened while it ran)."""
        found, value = self.fresh(key)
        if found:
            return value
        now = time.monotonic()
        generation = self._generation
        value = load()
        with self._lock:
            if len(self._entries) > MAX_ENTRIES:
                self._entries.clear()
            if generation == self._generation:
                self._entries[key] = (now, value)
        return value
