"""The walk over ``P``'s rows, written once: ranges of rows that lie in one segment and one part.

Every pass over ``P`` (the numba kernels and the Triton kernels alike) visits the rows in ranges that never
cross a segment's end (the rows of a segment share one scaling ``b = E[segment] * w``) nor a part's end (a
part is what one parallel worker reads: ``parts`` equal slices of ``ceil(n / parts)`` rows). The ranges are
computed here, outside the compiled code, in a few numpy operations over the segments; the kernels only
loop over them.
"""

from __future__ import annotations

import numpy as np

_CACHE: dict = {}
_CACHE_SIZE = 16


def walk(n: int, seg_stop: np.ndarray, parts: int = 1, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ranges ``(start, stop, segment)`` (int64, R x 3) covering rows ``0..n`` in order, and ``first``
    (int64, parts + 1): part p reads ranges ``first[p]:first[p + 1]``.

    A range lies within one segment (``seg_stop``: each segment's end row, non-decreasing; rows past the last
    stop are not visited) and one part, and holds at most ``max_rows`` rows when given (the Triton tiles).
    Empty segments are skipped, as ``searchsorted(seg_stop, row, side="right")`` skips them.
    """
    key = (n, parts, max_rows, seg_stop.tobytes())
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    stops = np.asarray(seg_stop, dtype=np.int64)
    end = min(n, int(stops[-1])) if len(stops) else 0
    step = max(1, -(-n // max(1, parts)))
    part_starts = np.arange(0, end, step, dtype=np.int64)
    cuts = np.unique(np.concatenate([part_starts, stops[stops < end], [0, end]]))
    starts, ends = cuts[:-1], cuts[1:]
    if max_rows is not None and len(starts):
        counts = -(-(ends - starts) // max_rows)
        offsets = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = np.repeat(starts, counts) + offsets * max_rows
        ends = np.minimum(starts + max_rows, np.repeat(ends, counts))
    segs = np.searchsorted(stops, starts, side="right").astype(np.int64)
    ranges = np.ascontiguousarray(np.stack([starts, ends, segs], axis=1).reshape(-1, 3), dtype=np.int64)
    first = np.searchsorted(starts, np.arange(parts + 1, dtype=np.int64) * step, side="left").astype(np.int64)
    first[-1] = len(starts)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (ranges, first)
    return ranges, first
