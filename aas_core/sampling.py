"""Nearest-frame resampling: which source frames stand for N evenly spread output frames (one helper for all)."""

from __future__ import annotations

import numpy as np


def nearest_indices(count: int, n: int) -> np.ndarray:
    """`n` indices into `count` frames, evenly spread with both ends included, each the nearest frame.

    Fewer source frames than `n` repeat frames (a slower shot); more skip frames. Rounding, not flooring,
    keeps the spacing symmetric, so the last output frame is the last source frame.
    """
    if count < 1 or n < 1:
        raise ValueError(f"need at least one source and one output frame, got {count} and {n}")
    return np.round(np.linspace(0, count - 1, n)).astype(int)


def spread_indices(count: int, limit: int) -> np.ndarray:
    """Up to `limit` distinct indices evenly spread over range(count), ends included (all of them when count <= limit)."""
    return np.unique(nearest_indices(count, min(count, limit)))
