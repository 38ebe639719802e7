"""The hot cache: the newest-used model versions kept in the Ray object store, bounded in bytes.

Invariants:
  * The bytes of the entries held never exceed `capacity_bytes`; an entry larger than the capacity is
    never held (its loader's copy serves the one call, then is freed).
  * Least recently used entries are evicted first. Evicting drops the cache's reference only: a caller
    still holding the object keeps it alive, and the next miss reloads from storage.
  * Thread-safe: the RegistryActor serves several calls at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds and how it has done."""

    entries: int
    used_bytes: int
    capacity_bytes: int
    hits: int
    misses: int
    evictions: int


class HotCache:
    """An LRU map from (model, version) to an object-store reference, bounded by the objects' bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self._entries: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()
        self._used_bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], count: bool = True) -> Any | None:
        """The reference held for `key` (now the most recently used), or None.

        `count=False`: a second look (after waiting for another caller's load) is not a new hit or miss.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += count
                return None
            self._entries.move_to_end(key)
            self._hits += count
            return entry[0]

    def put(self, key: tuple[str, int], ref: Any, size_bytes: int) -> bool:
        """Hold `ref`, evicting the least recently used entries to make room; False if it cannot fit."""
        with self._lock:
            if size_bytes > self.capacity_bytes:
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._used_bytes -= old[1]
            while self._entries and self._used_bytes + size_bytes > self.capacity_bytes:
                _, (_, evicted_bytes) = self._entries.popitem(last=False)
                self._used_bytes -= evicted_bytes
                self._evictions += 1
            self._entries[key] = (ref, size_bytes)
            self._used_bytes += size_bytes
            return True

    def keys(self) -> list[tuple[str, int]]:
        """Held keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> CacheStats:
        """Entries, bytes, hits, misses, evictions."""
        with self._lock:
            return CacheStats(len(self._entries), self._used_bytes, self.capacity_bytes, self._hits,
                              self._misses, self._evictions)
