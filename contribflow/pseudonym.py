"""Keyed pseudonymisation of taxpayer ids.

A plain hash of a 5-digit id is reversed by hashing all 100,000 candidates; an HMAC-SHA256 with a
secret key is not, as long as the key stays secret. The key is read from the environment (a Secret in
the cluster), used here in Python only, and never passed to dbt, logged or written to an artifact.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    """HMAC-SHA256 (hex) of a taxpayer id, memoised: a day's file repeats a small set of ids."""

    def __init__(self, key: bytes, cache_limit: int = 1_000_000) -> None:
        if not key:
            raise ValueError("the pseudonymisation key is empty")
        self._key = key
        self._cache: dict[str, str] = {}
        self._cache_limit = cache_limit

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<redacted>)"

    def key_of(self, taxpayer_id: str) -> str:
        cached = self._cache.get(taxpayer_id)
        if cached is None:
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            cached = hmac.new(self._key, taxpayer_id.encode("utf-8"), hashlib.sha256).hexdigest()
            self._cache[taxpayer_id] = cached
        return cached
