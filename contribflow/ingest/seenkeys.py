"""The declaration ids seen earlier in a file: the duplicate check across chunks, in bounded memory."""

from __future__ import annotations

import mmap
import tempfile
from typing import IO

import numpy as np
import pandas as pd


def _found_in(run: np.ndarray, ordered: np.ndarray, seen: np.ndarray) -> None:
    """Mark in ``seen`` the sorted hashes ``ordered`` that are in the sorted ``run``.
    Sorted queries walk the run once instead of jumping around it."""
    if len(run):
        pos = np.minimum(np.searchsorted(run, ordered), len(run) - 1)
        seen |= run[pos] == ordered


class SeenKeys:
    """Declaration ids seen earlier in this file, as 64-bit hashes (8 bytes an id).

    Two different ids share a hash with probability about n²/2⁶⁵ (3·10⁻⁶ for 10M ids in a file).

    The hashes are kept in sorted runs; a new run is merged with the previous one while that one is
    not more than twice as big, up to ``max_run`` hashes (as in an LSM tree), so marking a chunk
    costs about its own size times the number of runs. A run that has reached half of ``max_run``
    is written to an unlinked temporary file and searched through a memory map whose pages are
    released after each chunk: the resident memory stays the same whatever the size of the file.
    Where no temporary file can be written, such runs simply stay in memory.
    """

    def __init__(self, max_run: int = 1 << 20) -> None:
        self.max_run = max_run
        self.runs: list[np.ndarray] = []
        self._spilled: list[tuple[IO[bytes], mmap.mmap, np.ndarray]] = []

    def mark(self, ids: pd.Series) -> np.ndarray:
        """True for each id that appeared earlier in the file (earlier in ``ids`` included)."""
        values = ids.to_numpy(dtype=object)
        present = ~pd.isna(values)
        # Python's own (SipHash) string hash: 64 bits, and cheaper than pandas' hash_array.
        h = np.fromiter(map(hash, values[present].tolist()), dtype=np.int64, count=int(present.sum()))
        order = np.argsort(h, kind="stable")
        ordered = h[order]
        seen = np.zeros(len(ordered), dtype=bool)
        seen[1:] = ordered[1:] == ordered[:-1]  # stable: the first occurrence stays unmarked
        for run in self.runs:
            _found_in(run, ordered, seen)
        for _, mapped, run in self._spilled:
            _found_in(run, ordered, seen)
            mapped.madvise(mmap.MADV_DONTNEED)  # one run's pages resident at a time
        self._add(ordered[~seen])
        earlier = np.empty(len(h), dtype=bool)
        earlier[order] = seen
        repeated = np.zeros(len(values), dtype=bool)
        repeated[present] = earlier
        return repeated

    def _add(self, run: np.ndarray) -> None:
        self.runs.append(run)
        while (len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1])
               and len(self.runs[-2]) + len(self.runs[-1]) <= self.max_run):
            merged = np.concatenate((self.runs[-2], self.runs.pop()))
            merged.sort(kind="stable")  # in place: one run-sized allocation per merge, not two
            self.runs[-1] = merged
        if len(self.runs[-1]) >= self.max_run // 2:
            self._spill(self.runs.pop())

    def _spill(self, run: np.ndarray) -> None:
        try:
            file = tempfile.TemporaryFile(prefix="contribflow-seen-")
            file.write(run.tobytes())
            file.flush()
            mapped = mmap.mmap(file.fileno(), run.nbytes, access=mmap.ACCESS_READ)
        except OSError:
            self.runs.insert(0, run)  # no writable temporary folder: keep it in memory
            return
        self._spilled.append((file, mapped, np.frombuffer(mapped, dtype=np.int64)))

    @property
    def count(self) -> int:
        return sum(len(run) for run in self.runs) + sum(len(a) for _, _, a in self._spilled)

    def close(self) -> None:
        """Release the temporary files (also done when the object is garbage-collected)."""
        while self._spilled:
            file, mapped, array = self._spilled.pop()
            del array  # the map cannot close while an array still points into it
            mapped.close()
            file.close()
