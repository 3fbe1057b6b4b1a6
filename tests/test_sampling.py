"""aas_core.sampling: the one nearest-frame resampling helper."""

from __future__ import annotations

import pytest

from aas_core.sampling import nearest_indices, spread_indices


def test_nearest_indices_spread_ends_included_and_repeat_when_short():
    assert nearest_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert nearest_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # fewer source frames: repeats, symmetric
    assert nearest_indices(7, 1).tolist() == [0]
    assert nearest_indices(16, 16).tolist() == list(range(16))
    with pytest.raises(ValueError, match="at least one"):
        nearest_indices(0, 4)


def test_spread_indices_are_distinct_and_capped():
    assert spread_indices(5, 16).tolist() == [0, 1, 2, 3, 4]
    picked = spread_indices(100, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 99 and len(set(picked.tolist())) == 16


def test_every_engine_uses_it():
    """generate's control frames, depth previews and metrics pick frames the same way."""
    import numpy as np

    from aas_core.depth.video import DepthVideo
    from aas_core.generate.run import control_frames
    from aas_core.metrics import even_indices

    depth = DepthVideo(frames=np.linspace(0, 1, 12, dtype=np.float32)[:, None, None] * np.ones((12, 8, 8), np.float32), fps=8.0, source="x")
    _, indices = control_frames(depth, 5, (8, 8))
    assert indices == nearest_indices(12, 5).tolist()
    assert even_indices(40, 8).tolist() == spread_indices(40, 8).tolist()
