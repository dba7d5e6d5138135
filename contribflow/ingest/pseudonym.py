"""Keyed pseudonymisation of taxpayer ids.

A plain hash of a 5-digit id is reversed by hashing all 100,000 candidates; an HMAC-SHA256 with a
secret key is not, as long as the key stays secret. The key is read from the environment (a Secret in
the cluster), used only inside the ingest process (here, and by the compiled encoder of
``_copyrows.c``, which computes the same keys), and never passed to dbt, logged or written to an
artifact.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping


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
        return self.keys_for((taxpayer_id,))[taxpayer_id]

    def keys_for(self, taxpayer_ids: Iterable[str]) -> Mapping[str, str]:
        """Make sure every id has its key in the memo, and return the memo (index it by id).

        Ingest looks up a whole chunk at once, hashing only the ids it has not seen before.
        """
        cache = self._cache
        wanted = set(taxpayer_ids)
        new = wanted.difference(cache)
        if len(cache) + len(new) > self._cache_limit:
            cache.clear()
            new = wanted
        for taxpayer in new:
            # A copy of the id: the memo outlives the chunk, whose strings it would otherwise pin.
            cache[taxpayer.encode().decode()] = hmac.digest(self._key, taxpayer.encode(), "sha256").hex()
        return cache
