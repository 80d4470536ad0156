"""The bounded memo cache shared by every session of a process."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

import numpy as np

__all__ = ["MemoCache"]


class MemoCache:
    """A thread-safe memo of computed values, least recently used out first.

    Concurrent requests for the same missing key wait for the one computation
    in flight instead of starting their own.

    Parameters
    ----------
    budget_bytes : int
        Most bytes of arrays to hold; the oldest entries go when exceeded.

    Attributes
    ----------
    computed : collections.Counter
        How many times each kind of value (the key's first item) was computed.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.computed = Counter()
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get(self, key: tuple, compute):
        """The value for ``key``, computing it (once, even across threads) if missing.

        An exception raised by ``compute`` reaches every caller waiting for it
        and leaves nothing behind; the next request computes again.
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:
                with self._lock:
                    if key in self._items:
                        return self._items[key]
                value = compute()
                self._store(key, value)
                return value
        finally:
            with self._lock:
                if self._key_locks.get(key) is key_lock and not key_lock.locked():
                    del self._key_locks[key]

    def peek(self, key: tuple):
        """The value for ``key`` if held now, else None (nothing is computed)."""
        with self._lock:
            return self._items.get(key)

    def _store(self, key, value) -> None:
        with self._lock:
            self.computed[key[0]] += 1
            self._items[key] = value
            self._sizes[key] = _nbytes(value)
            while sum(self._sizes.values()) > self.budget_bytes and len(self._items) > 1:
                oldest, _ = self._items.popitem(last=False)
                del self._sizes[oldest]

    @property
    def nbytes(self) -> int:
        """Bytes of arrays held now."""
        with self._lock:
            return sum(self._sizes.values())

    @property
    def pending(self) -> int:
        """Keys being computed now (or waited for)."""
        with self._lock:
            return len(self._key_locks)

    def clear(self) -> None:
        """Forget every value and reset the counters."""
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._key_locks.clear()
            self.computed.clear()


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0
